"""`search`: the command line. Wiring only; each command lives in its own module."""
from __future__ import annotations

import click

from search.cli._output import run_cli
from search.cli.ablate import ablate, transfer
from search.cli.adopt import adopt
from search.cli.catalog import catalog, knobs, mutate, propose
from search.cli.evolve import evolve
from search.cli.export import export
from search.cli.prepare import prepare
from search.cli.report import report
from search.cli.run import run
from search.cli.status import status


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="evotrain")
def cli() -> None:
    """evotrain: evolve a train.py with measured, combined, ablated improvements."""


for command in (evolve, status, ablate, report, export, transfer, prepare, run, catalog, mutate, propose, knobs,
                adopt):
    cli.add_command(command)


def main() -> None:
    run_cli(cli)
