"""`search evolve`: the main job. Its options are generated from EvolveConfig (search/config.py), where each is
declared once with its default and help; this module adds the few that only the command line has."""
from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import click

from search.cli._output import FORMAT_OPTION, Output
from search.config import EvolveConfig, default_budget, options
from trainer.budget import Budget
from trainer.errors import UserError


def config_options(command: Callable) -> Callable:
    """One click option per EvolveConfig option field, in declaration order."""
    for field in reversed(options()):
        meta = field.metadata
        flag = meta["flag"] or "--" + field.name.replace("_", "-")
        if meta["choices"]:
            kind = click.Choice(list(meta["choices"]))
        elif meta["parse"] is not None or field.name == "budget":
            kind = str
        else:
            kind = meta["kind"] or type(field.default)
        default = meta["shown"] if meta["parse"] is not None and meta["shown"] is not None else field.default
        if kind is bool:
            command = click.option(flag, field.name, is_flag=True, default=default, help=meta["help"])(command)
            continue
        command = click.option(flag, field.name, type=kind, default=default, show_default=default not in (None, ""),
                               help=meta["help"])(command)
    return command


@click.command()
@click.option("--name", default="evolve", show_default=True, help="Run name: the run directory is runs/NAME. "
              "The same command again resumes it.")
@click.option("--run-dir", type=click.Path(path_type=Path), default=None, help="Run directory (overrides --name).")
@click.option("--baseline", type=click.Path(path_type=Path), default=None,
              help="The train.py to improve, with the local modules it imports (default: the built-in baseline).")
@click.option("--direction", "direction_file", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              default=None, help="A research direction for the LLM mutator (program.md style).")
@click.option("--unit", type=click.Choice(["tokens", "seconds"]), default=None,
              help="Budget unit when --budget is not given (default: tokens on CPU, seconds on a GPU).")
@click.option("--live/--plain", default=None, help="Live dashboard or plain log lines (default: live on a terminal).")
@config_options
@FORMAT_OPTION
def evolve(name: str, run_dir: Path | None, baseline: Path | None, direction_file: Path | None, unit: str | None,
           live: bool | None, output_format: str, **values: object) -> None:
    """Evolve a train.py: changes from the catalog or an LLM and the script's own knobs, judged on short training
    runs by one model of every change's effect; the best stack tested on held-out data and exported as best.patch."""
    from search.driver import Driver, Stopped, baseline_identity
    from search.progress import make_reporter
    from trainer.program import Program
    from trainer.runner import resolve_device

    out = Output(output_format)
    if baseline is not None and not baseline.is_file():
        raise UserError(f"no such baseline: {baseline}; pass the path of a train.py, or nothing for the built-in one")
    device = resolve_device(values["device"])
    kind = device.split(":")[0]
    budget = values["budget"]
    if budget and unit and Budget.parse(budget).unit.value != unit:
        raise UserError(f"--budget {budget} is in {Budget.parse(budget).unit.value}, not {unit}: drop --unit or "
                        "write the budget in that unit")
    for field in options():
        parse = field.metadata["parse"]
        if parse is not None and isinstance(values[field.name], str):
            values[field.name] = parse(values[field.name])
    values.update(device=device, budget=str(Budget.parse(budget or default_budget(kind, unit))))
    program = Program.load(baseline) if baseline else None  # the script and the modules that evolve with it
    config = EvolveConfig(
        run_dir=run_dir or Path("runs") / name, baseline=baseline.resolve() if baseline else None,
        baseline_hash=baseline_identity(program), direction=direction_file.read_text() if direction_file else "",
        device_kind=kind, **values)
    modules = f" (with {', '.join(program.names[1:])})" if program and len(program.names) > 1 else ""
    out.note(f"evolving {baseline or 'the built-in baseline'}{modules} in {config.run_dir} on {device} with the "
             f"{config.strategy} strategy: budget {config.budget} per run, search "
             f"{_limits(config)}")
    reporter = make_reporter(live)
    try:
        result = Driver(config, reporter).run()
    except Stopped:
        reporter.close()
        out.note(f"stopped. Run the same command again to resume {config.run_dir}.")
        sys.exit(130)
    reporter.close()
    _show(out, config.run_dir, result)


def _limits(config: EvolveConfig) -> str:
    limits = []
    if config.time_limit is not None:
        limits.append(f"{config.time_limit / 60:g} min")
    if config.compute:
        limits.append(f"{config.compute} of compute")
    if config.generations is not None:
        limits.append(f"{config.generations * config.population} candidates")
    return " or ".join(limits)


def _show(out: Output, run_dir: Path, result: dict) -> None:
    from population.stats import Paired

    def shown(data: dict | None) -> str:
        return str(Paired.from_dict(data)) if data else "-"

    def member(row: dict) -> str:
        """What was measured of one member (runs alone and left out, asha) and what the model says (additive)."""
        parts = [f"{label} {shown(row[key])}" for label, key in (("alone", "add_one"), ("in the stack", "leave_one_out"))
                 if row.get(key)]
        estimate = (row.get("model") or {}).get("leave_one_out")
        if estimate:
            parts.append(f"model {estimate['mean']:+.4f} ± {estimate['sd']:.4f}")
        return "; ".join(parts) or "-"

    rows = [("stack", f"{result['stack'][:8]} ({len(result['members'])} changes, {result['strategy']})"),
            *((f"  {row['atom']}", member(row)) for row in result["ablation"]),
            *([("val delta", shown(result["val_delta"]))] if result.get("val_delta") else []),
            ("test delta", shown(result["test_delta"]) + "  (held-out split, fresh seeds)"),
            ("patch", result["files"]["patch"]),
            ("status", f"search status {run_dir}")]
    out.block(f"evolve: {run_dir}", rows, result)

