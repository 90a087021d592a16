"""`search report`: a search's results as one self-contained HTML page (plots embedded, no network needed)."""
from __future__ import annotations

from pathlib import Path

import click

from search.cli._output import FORMAT_OPTION, Output
from search.cli._runs import RUN_DIR_ARGUMENT, STORAGE_OPTION, find_run
from trainer.errors import UserError

REPORT = "report.html"  # written into the run directory unless -o says otherwise


@click.command()
@RUN_DIR_ARGUMENT
@STORAGE_OPTION
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help=f"Write the report here (default: RUN_DIR/{REPORT}).")
@FORMAT_OPTION
def report(run_dir: Path | None, storage: str | None, output: Path | None, output_format: str) -> None:
    """Write an HTML report of the search in RUN_DIR (default: the newest folder under ./runs): headline
    numbers and held-out test, progress over time, ablation with CIs, fidelity, lineage, knob importance."""
    import sqlalchemy as sa

    import analysis
    from analysis.report import write

    ref = find_run(run_dir, storage, "report")
    if output is None:
        if ref.run_dir is None:
            raise UserError("--storage without RUN_DIR has no folder to write the report into: pass -o PATH")
        output = ref.run_dir / REPORT
    try:
        run = analysis.load(ref.url if storage else ref.run_dir)
        try:
            written = write(run, output)
        finally:
            run.close()
    except sa.exc.SQLAlchemyError as error:
        raise UserError(f"cannot read the store of {ref.name}: {str(error).splitlines()[0]} (was it written by "
                        "another evotrain version? read it with that one)") from None
    Output(output_format).block("report written", [("path", str(written))], {"path": str(written)})
