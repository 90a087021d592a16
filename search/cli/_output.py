"""One output sink for every command: human text or JSON, and one-line errors.

Progress and notes go to stderr, results to stdout, so `--format json` output can be piped.
Set EVOTRAIN_DEBUG=1 to see the traceback behind an error.
"""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable

import click

from trainer.errors import UserError

FORMAT_OPTION = click.option(
    "--format", "output_format", type=click.Choice(["human", "json"]), default="human", show_default=True,
    help="Human-readable text, or one JSON document on stdout.",
)


class Output:
    def __init__(self, output_format: str = "human") -> None:
        self.json = output_format == "json"

    def note(self, text: str) -> None:
        """Progress and remarks: stderr, in both formats."""
        click.echo(text, err=True)

    def block(self, title: str, rows: Iterable[tuple[str, str]], data: dict) -> None:
        """A result: aligned `key  value` lines for people, `data` as JSON for programs."""
        if self.json:
            click.echo(json.dumps(data, indent=2, default=str))
            return
        rows = list(rows)
        width = max(len(key) for key, _ in rows)
        click.echo(title)
        for key, value in rows:
            click.echo(f"  {key:<{width}}  {value}")


    def table(self, rows: list[dict], columns: list[str]) -> None:
        """Rows as aligned columns for people, as a JSON list for programs."""
        if self.json:
            click.echo(json.dumps(rows, indent=2, default=str))
            return
        cells = [[str(row.get(c, "")) for c in columns] for row in rows]
        widths = [max(len(c), *(len(r[i]) for r in cells)) if cells else len(c) for i, c in enumerate(columns)]
        click.echo("  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip())
        for r in cells:
            click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())


def run_cli(group: click.Group) -> None:
    """Known errors become one actionable line and exit code 2; EVOTRAIN_DEBUG=1 re-raises."""
    try:
        group.main(standalone_mode=False)
    except UserError as error:
        if os.environ.get("EVOTRAIN_DEBUG"):
            raise
        click.echo(f"Error: {error}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
