"""`search evolve`: the main job. Options to EvolveConfig, a live view, the final result."""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import click

from search.cli._options import DATASET_OPTION, DEVICE_OPTION
from search.cli._output import FORMAT_OPTION, Output
from trainer.budget import Budget, BudgetUnit
from trainer.errors import UserError


def _seconds(text: str | None) -> float | None:
    if text is None or text.lower() in ("0", "none"):
        return None
    budget = Budget.parse(text)
    if budget.unit is not BudgetUnit.SECONDS:
        raise UserError(f"--time {text!r} is not a duration: write it like 12min, 90s or 1h")
    return budget.amount


@click.command()
@click.option("--name", default="evolve", show_default=True, help="Run name: the run directory is runs/NAME. "
              "The same command again resumes it.")
@click.option("--run-dir", type=click.Path(path_type=Path), default=None, help="Run directory (overrides --name).")
@click.option("--baseline", type=click.Path(path_type=Path), default=None,
              help="The train.py to improve (default: the built-in baseline).")
@DATASET_OPTION
@click.option("--mutator", default="catalog", show_default=True,
              help="catalog (built-in moves), anthropic (an LLM; needs ANTHROPIC_API_KEY) or replay:PATH.")
@click.option("--direction", "direction_file", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              default=None, help="A research direction for the LLM mutator (program.md style).")
@click.option("--max-llm-cost", type=float, default=None, help="Stop LLM calls after this many dollars.")
@click.option("--population", default=8, show_default=True, help="Population size.")
@click.option("--generations", type=int, default=None,
              help="Stop the search phase after GENERATIONS x POPULATION children (default: --time decides).")
@click.option("--time", "time_text", default="10min", show_default=True,
              help="Wall-clock length of the search phase, before combine (none: --generations decides).")
@click.option("--budget", default=None, help="Top rung budget: tokens (300k, 2M) or seconds (60s, 5min). "
              "Default: 300k tokens on CPU, 5min on a GPU.")
@click.option("--unit", type=click.Choice(["tokens", "seconds"]), default=None,
              help="Budget unit when --budget is not given (default: tokens on CPU, seconds on a GPU).")
@click.option("--fractions", default="1/4,1/2,1", show_default=True, help="Rung budgets as fractions of --budget.")
@click.option("--seeds", "seed_counts", default="1,2,3", show_default=True, help="Seeds per rung.")
@click.option("--eta", default=3, show_default=True, help="Promote the best 1/ETA of each rung.")
@DEVICE_OPTION
@click.option("--workers", type=int, default=None, help="Parallel evaluations (default: one per GPU; on CPU "
              "min(cores, 4)).")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local subprocesses, or Ray tasks (pip install 'evotrain[ray]').")
@click.option("--ray-address", default=None, help="Address of an existing Ray cluster (default: start one).")
@click.option("--tune-share", default=0.25, show_default=True, help="Share of children that are knob trials.")
@click.option("--merge-share", default=0.15, show_default=True, help="Share of children that merge two members.")
@click.option("--sampler", type=click.Choice(["tpe", "gp"]), default="tpe", show_default=True,
              help="Optuna sampler for the knobs.")
@click.option("--seed", default=0, show_default=True, help="Seed of the search (selection, proposals, seeds).")
@click.option("--alpha", default=0.05, show_default=True,
              help="Accept a child when a one-sided paired t-test at the top rung gives p < ALPHA.")
@click.option("--prune-margin", default=0.05, show_default=True,
              help="Stop a run early when a probe is this fraction worse than its parent's (0: never).")
@click.option("--recheck-every", default=3, show_default=True,
              help="Re-check the best elite on fresh seeds after this many acceptances.")
@click.option("--timeout", "timeout_s", type=float, default=None,
              help="Kill an evaluation after this many seconds (default: from its budget).")
@click.option("--combine-max", default=6, show_default=True, help="Most atomic changes the combine step stacks.")
@click.option("--stack-trials", default=4, show_default=True, help="Knob trials on the final stack.")
@click.option("--test-seeds", default=3, show_default=True, help="Fresh seeds for the held-out test.")
@click.option("--storage", default=None, help="SQLAlchemy URL of the store (default: SQLite in the run directory).")
@click.option("--eval-tokens", type=int, default=None, help="Validation tokens per evaluation "
              "(default: 65k on CPU, 2M on a GPU).")
@click.option("--live/--plain", default=None, help="Live dashboard or plain log lines (default: live on a terminal).")
@FORMAT_OPTION
def evolve(name: str, run_dir: Path | None, baseline: Path | None, dataset: str, mutator: str,
           direction_file: Path | None, max_llm_cost: float | None, population: int, generations: int | None,
           time_text: str, budget: str | None, unit: str | None, fractions: str, seed_counts: str, eta: int,
           device: str, workers: int | None, executor: str, ray_address: str | None, tune_share: float,
           merge_share: float, sampler: str, seed: int, alpha: float, prune_margin: float, recheck_every: int,
           timeout_s: float | None, combine_max: int,
           stack_trials: int, test_seeds: int, storage: str | None, eval_tokens: int | None, live: bool | None,
           output_format: str) -> None:
    """Evolve a train.py: mutations, knob trials and merges judged on paired multi-fidelity runs, then
    the accepted changes combined, ablated, tested on held-out data and exported as best.patch."""
    from search.config import EvolveConfig, default_budget
    from search.evolve import Evolution, Stopped
    from search.ladder import parse_counts, parse_fractions
    from search.progress import make_reporter
    from trainer.runner import resolve_device

    out = Output(output_format)
    if baseline is not None and not baseline.is_file():
        raise UserError(f"no such baseline: {baseline}; pass the path of a train.py, or nothing for the built-in one")
    device = resolve_device(device)
    kind = device.split(":")[0]
    if budget and unit and Budget.parse(budget).unit.value != unit:
        raise UserError(f"--budget {budget} is in {Budget.parse(budget).unit.value}, not {unit}: drop --unit or "
                        "write the budget in that unit")
    baseline_text = baseline.read_text() if baseline else ""
    config = EvolveConfig(
        run_dir=run_dir or Path("runs") / name, baseline=baseline.resolve() if baseline else None,
        baseline_hash=hashlib.sha256(baseline_text.encode()).hexdigest()[:16] if baseline else "built-in",
        dataset=dataset, mutator=mutator, direction=direction_file.read_text() if direction_file else "",
        population=population, generations=generations, time_limit=_seconds(time_text),
        budget=str(Budget.parse(budget or default_budget(kind, unit))), fractions=parse_fractions(fractions),
        seeds=parse_counts(seed_counts), eta=eta, device=device, device_kind=kind, workers=workers,
        executor=executor, ray_address=ray_address, tune_share=tune_share, merge_share=merge_share,
        sampler=sampler, seed=seed, alpha=alpha, prune_margin=prune_margin, recheck_every=recheck_every,
        timeout=timeout_s, combine_max=combine_max,
        stack_trials=stack_trials, test_seeds=test_seeds, max_llm_cost=max_llm_cost, storage=storage,
        eval_tokens=eval_tokens)
    out.note(f"evolving {baseline or 'the built-in baseline'} in {config.run_dir} on {device}: top budget "
             f"{config.budget}, rungs {fractions} x seeds {seed_counts}, population {population}")
    reporter = make_reporter(live)
    try:
        result = Evolution(config, reporter).run()
    except Stopped:
        reporter.close()
        out.note(f"stopped. Run the same command again to resume {config.run_dir}.")
        sys.exit(130)
    reporter.close()
    _show(out, config.run_dir, result)


def _show(out: Output, run_dir: Path, result: dict) -> None:
    from population.stats import Paired

    def shown(data: dict | None) -> str:
        return str(Paired.from_dict(data)) if data else "-"

    rows = [("stack", f"{result['stack'][:8]} ({len(result['members'])} changes)"),
            *((f"  {row['atom']}", f"alone {shown(row['add_one'])}; in the stack {shown(row['leave_one_out'])}")
              for row in result["ablation"]),
            ("val delta", shown(result["val_delta"])),
            ("test delta", shown(result["test_delta"]) + "  (held-out split, fresh seeds)"),
            ("patch", result["files"]["patch"]),
            ("status", f"search status {run_dir}")]
    out.block(f"evolve: {run_dir}", rows, result)
