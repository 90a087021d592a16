"""`search ablate` and `search transfer`: the ablation table of a finished run, and more evaluations for it."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import click

from search.cli._output import FORMAT_OPTION, Output
from search.cli._runs import RUN_DIR_ARGUMENT, STORAGE_OPTION, find_run
from trainer.errors import UserError

WORKERS_OPTION = click.option("--workers", type=int, default=None,
                              help="Parallel evaluations (default: as for search evolve).")


@contextmanager
def _rerun(run_dir: Path | None, storage: str | None, command: str, workers: int | None, out: Output):
    """The run, locked and open for more evaluations; progress as notes."""
    from population.store import Store
    from search.lock import RunLock
    from search.rerun import Rerun

    ref = find_run(run_dir, storage, command)
    store = Store(ref.url)
    folder = ref.run_dir or Path(store.meta().get("options", {}).get("run_dir", "."))
    try:
        with RunLock(folder):
            rerun = Rerun(store, folder, workers, on_finish=lambda request, result: out.note(
                f"  {request.variant[:8]} {request.purpose} {request.budget} seed {request.seed}: "
                f"{result.val_bpb:.4f}" if result.val_bpb is not None else f"  {request.variant[:8]}: {result.status.value}"))
            try:
                yield rerun, ref
            finally:
                rerun.close()
    finally:
        store.close()


def _shown(mean: float, low: float, high: float, n: int) -> str:
    if not n:
        return "-"
    interval = f" [{low:+.4f}, {high:+.4f}]" if n > 1 else ""
    return f"{mean:+.4f}{interval} n={n}"


@click.command()
@RUN_DIR_ARGUMENT
@STORAGE_OPTION
@click.option("--seeds", "extra_seeds", type=int, default=0, show_default=True,
              help="Run the ablation's variants on this many more seeds first, to tighten the intervals.")
@WORKERS_OPTION
@FORMAT_OPTION
def ablate(run_dir: Path | None, storage: str | None, extra_seeds: int, workers: int | None,
           output_format: str) -> None:
    """The final stack's ablation: each change alone on the baseline (add-one), the stack without it
    (leave-one-out), and their difference (interaction), with 95% intervals."""
    import analysis

    out = Output(output_format)
    if extra_seeds < 0:
        raise UserError(f"--seeds must be 0 or more, but got {extra_seeds}")
    if extra_seeds:
        with _rerun(run_dir, storage, "ablate", workers, out) as (rerun, _):
            seeds = rerun.add_ablation_seeds(extra_seeds)
            out.note(f"ran the ablation on seeds {', '.join(map(str, seeds))}")
    ref = find_run(run_dir, storage, "ablate")
    run = analysis.load(ref.url)
    table = run.ablation
    if table.empty:
        raise UserError(f"{ref.name} has no ablation: its search has not reached the combine step, or nothing "
                        "beat the baseline")
    rows = [{"atom": r.atom, "add-one (alone)": _shown(r.add_one_mean, r.add_one_ci_low, r.add_one_ci_high,
                                                          r.add_one_n),
             "leave-one-out (in the stack)": _shown(r.leave_one_out_mean, r.leave_one_out_ci_low,
                                                    r.leave_one_out_ci_high, r.leave_one_out_n),
             "interaction": _shown(r.interaction_mean, r.interaction_ci_low, r.interaction_ci_high,
                                   r.interaction_n)} for r in table.itertuples()]
    if out.json:
        out.table(table.to_dict(orient="records") + [{"stack_total": run.stack_total()}], [])
        return
    out.table(rows, list(rows[0]))
    total = run.stack_total()
    click.echo(f"stack {total['stack'][:8]}: {total['total']:+.4f} [{total['total_ci_low']:+.4f}, "
               f"{total['total_ci_high']:+.4f}] vs the baseline; sum of add-one {total['sum_add_one']:+.4f} "
               "(negative = better; the difference is the members' interaction)")


@click.command()
@RUN_DIR_ARGUMENT
@STORAGE_OPTION
@click.option("--set", "settings", multiple=True, metavar="KNOB=VALUE",
              help="A knob value for both the baseline and the stack, e.g. --set DEPTH=8 (repeatable).")
@click.option("--budget", default=None, help="Training budget at the new scale (default: the run's top budget).")
@click.option("--seeds", default=3, show_default=True, help="Fresh paired seeds.")
@click.option("--per-atom", is_flag=True, help="Also each member of the stack alone on the baseline.")
@WORKERS_OPTION
@FORMAT_OPTION
def transfer(run_dir: Path | None, storage: str | None, settings: tuple[str, ...], budget: str | None, seeds: int,
             per_atom: bool, workers: int | None, output_format: str) -> None:
    """Does the gain hold at another scale? The baseline and the final stack, with knob overrides (a bigger
    model) and another budget, on fresh paired seeds."""
    from population.stats import Paired
    from trainer.budget import Budget

    out = Output(output_format)
    overrides = dict(_setting(text) for text in settings)
    if seeds < 2:
        raise UserError(f"--seeds must be at least 2 for a paired test, but got {seeds}")
    with _rerun(run_dir, storage, "transfer", workers, out) as (rerun, ref):
        chosen = Budget.parse(budget) if budget else rerun.config.top_budget
        out.note(f"transfer of {ref.name}: {', '.join(settings) or 'no knob changes'} at {chosen}, {seeds} seeds")
        record = rerun.transfer(overrides, chosen, seeds, per_atom)
        alpha = rerun.config.alpha
    rows = []
    for row in record["rows"]:
        comparison = Paired.from_dict(row) if row.get("n") else None
        holds = comparison is not None and comparison.better(alpha)
        rows.append({"variant": row["name"], "delta vs baseline": str(comparison) if comparison else "-",
                     "holds": "yes" if holds else "no"})
    if out.json:
        out.table([record], [])
        return
    out.table(rows, ["variant", "delta vs baseline", "holds"])


def _setting(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise UserError(f"--set {text!r}: write it as KNOB=VALUE, e.g. --set DEPTH=8")
    return name.strip(), value.strip()
