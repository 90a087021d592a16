"""Does evotrain's search earn its keep? Every strategy, one driver, the same compute.

    # the synthetic task (known ground truth): 6 tasks x 3 noise levels x 3 budgets, every strategy
    .venv/bin/python benchmarks/search_efficiency.py synthetic --out benchmarks/results/search_efficiency_synthetic.csv

    # a small version: 3 tasks, 2 noise levels, 2 budgets (under 10 minutes on 2 cores)
    .venv/bin/python benchmarks/search_efficiency.py synthetic --quick --out /tmp/quick.csv

    # the real task: the CPU baseline, the catalog, real sandboxed runs (70 minutes on 2 cores)
    .venv/bin/python benchmarks/search_efficiency.py real --compute 6M \
        --out benchmarks/results/search_efficiency_real.csv

Every strategy runs through `search evolve`'s own driver (search/driver.py) with `--compute`:
the same training tokens for each, and each spends them (a strategy that stops early is
reported with what it spent). Compute is counted in training tokens, the budget's unit; a
change that grows the model costs more time per token (README, Measured).

Synthetic task (benchmarks/synthetic_task.py): a train.py stand-in whose val_bpb is a hidden
function of 16 switchable features and 4 knobs plus seeded noise, independent per task. The
truth gives regret (true val_bpb of the answer minus the best reachable), recall of the truly
good features, and false keeps (kept changes, features or moved knobs, whose true effect in
the answer is harmful). Each strategy's incumbent is recorded as it changes (the driver's
`incumbent` decisions), which gives the anytime curve: true regret against compute.

Real task: the built-in CPU baseline and the catalog. Each strategy's answer is tested by the
driver on the held-out split with fresh seeds (the same for every strategy); each kept change
is then left out on those seeds: a change whose removal does not hurt is a false keep. The
anytime curve is the held-out delta of the incumbent at a quarter, half, three quarters and
all of the compute.

Writes the CSV given by --out, a markdown table beside it (.md) and the anytime curves (.png).
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

import synthetic_task as synthetic
from population.stats import Paired, paired
from population.store import DecisionKind, Store
from search.config import EvolveConfig
from search.driver import Driver, baseline_identity
from search.progress import NullReporter
from trainer.budget import Budget, BudgetUnit
from trainer.program import Program

STRATEGIES = ("additive", "greedy", "asha", "tpe")
DEFAULT = "additive"
CHECKPOINTS = (0.25, 0.5, 0.75, 1.0)


# ---------------------------------------------------------------- the synthetic task
def synthetic_run(strategy: str, task: synthetic.SyntheticTask, runs: int, seed: int, work: Path) -> dict:
    """One strategy on one task with `runs` full-budget runs of compute: truth, and the anytime curve."""
    baseline = work / "standin.py"
    baseline.write_text(synthetic.standin_source(task))
    config = EvolveConfig(run_dir=work / strategy, baseline=baseline, baseline_hash=f"standin-{task.task}",
                          budget=synthetic.FULL_BUDGET, device="cpu", device_kind="cpu", workers=2, time_limit=None,
                          compute=str(Budget.parse(f"{runs * 300}k")), strategy=strategy, seed=seed)
    Driver(config, NullReporter(), source=synthetic.SyntheticSource(task, seed),
           executor=synthetic.SyntheticExecutor(task)).run()
    store = Store(config.storage_url())
    try:
        variants = {v.id: v for v in store.variants()}
        result = store.meta()["result"]
        spent = sum(e.result.tokens for e in store.evaluations() if e.split == "val" and e.result)
        curve = [(d.detail["compute"], regret(task, variants[d.variant_id].source)) for d in store.decisions()
                 if d.kind == DecisionKind.INCUMBENT]
        return {"strategy": strategy, "default": strategy == DEFAULT, "task": task.task, "noise": task.noise,
                "runs": runs, "compute": spent, **truth(task, variants[result["stack"]].source),
                "curve": curve}
    finally:
        store.close()


def regret(task: synthetic.SyntheticTask, source: str) -> float:
    on, knobs = synthetic.phenotype(source)
    return task.score(on, knobs) - task.optimum()


def truth(task: synthetic.SyntheticTask, source: str) -> dict:
    """regret, recall of the good features, kept changes and the harmful ones among them (true marginal > 0)."""
    on, knobs = synthetic.phenotype(source)
    moved = [k for k in knobs if knobs[k] != synthetic.KNOBS[k].default]
    changes = [f"feature_{i:02d}" for i in sorted(on)] + moved
    good = task.good()
    return {"regret": regret(task, source), "recall": len(on & good) / len(good), "kept": len(changes),
            "false_keeps": sum(task.marginal(on, knobs, change) > 0 for change in changes)}


def run_synthetic(args: argparse.Namespace) -> tuple[list[dict], list[dict]]:
    rows, curves = [], []
    for noise in args.noise:
        for index in range(args.tasks):
            task = synthetic.make_task(index, noise=noise)
            for runs in args.runs:
                for strategy in args.strategies:
                    started = time.perf_counter()
                    with tempfile.TemporaryDirectory() as work:
                        row = synthetic_run(strategy, task, runs, index, Path(work))
                    curves += [{"strategy": strategy, "task": index, "noise": noise, "runs": runs, "compute": c,
                                "regret": r} for c, r in row.pop("curve")]
                    rows.append(row)
                    print(f"noise {noise} task {index} runs {runs} {strategy:8s} regret {row['regret']:.4f} recall "
                          f"{row['recall']:.2f} kept {row['kept']} false {row['false_keeps']} "
                          f"({time.perf_counter() - started:.0f}s)", file=sys.stderr, flush=True)
    return rows, curves


def compute_to_reach(curves: list[dict], rows: list[dict], target_strategy: str = "greedy") -> list[dict]:
    """For each strategy and setting: the share of the compute it needed before its incumbent's regret was at most
    the final regret of `target_strategy` in the same setting (nan: never)."""
    final = {(r["task"], r["noise"], r["runs"]): r["regret"] for r in rows if r["strategy"] == target_strategy}
    found = []
    for r in rows:
        key = (r["task"], r["noise"], r["runs"])
        if key not in final:
            continue
        points = sorted((c["compute"], c["regret"]) for c in curves if c["strategy"] == r["strategy"]
                        and (c["task"], c["noise"], c["runs"]) == key)
        reached = next((compute for compute, value in points if value <= final[key] + 1e-12), None)
        total = r["runs"] * Budget.parse(synthetic.FULL_BUDGET).amount
        found.append({**{k: r[k] for k in ("strategy", "task", "noise", "runs")},
                      "share": math.nan if reached is None else reached / total})
    return found


# ---------------------------------------------------------------- the real task
def real_run(strategy: str, args: argparse.Namespace) -> dict:
    """One strategy on the CPU baseline (or --baseline) with the catalog: its run directory is reused if it
    finished."""
    run_dir = Path(args.runs_dir) / strategy
    config = EvolveConfig(run_dir=run_dir, baseline=args.baseline, baseline_hash=baseline_identity(args.baseline and Program.load(args.baseline)),
                          budget=args.budget, device="cpu",
                          device_kind="cpu", time_limit=None, compute=args.compute, strategy=strategy,
                          seed=args.seed, workers=args.workers, test_seeds=args.test_seeds)
    result = Driver(config, _plain_log(strategy)).run()
    return _real_row(strategy, config, result, args)


def _real_row(strategy: str, config: EvolveConfig, result: dict, args: argparse.Namespace) -> dict:
    """The answer's held-out delta, its false keeps (each member left out on the test seeds) and the anytime
    points (the incumbent at a few shares of the compute, on the test seeds)."""
    from search.rerun import Rerun

    store = Store(config.storage_url())
    rerun = Rerun(store, config.run_dir, args.workers)
    try:
        seeds = rerun.ladder.test_seeds(config.test_seeds)
        trace = [(d.detail["compute"], d.variant_id) for d in store.decisions() if d.kind == DecisionKind.INCUMBENT]
        total = Budget.parse(config.compute).amount
        checkpoints = [(share, next((v for c, v in reversed(trace) if c <= share * total), rerun.baseline.id))
                       for share in CHECKPOINTS]
        withouts = [row["without"] for row in result["ablation"] if row.get("without") and args.false_keeps]
        rerun.test([v for _, v in checkpoints] + withouts, seeds)
        base = rerun.test_scores(rerun.baseline.id, seeds)
        stack = rerun.test_scores(result["stack"], seeds)
        test = paired(stack, base) if result["stack"] != rerun.baseline.id else None
        false = [row["atom"] for row in result["ablation"] if row.get("without") and args.false_keeps
                 and (d := paired(stack, rerun.test_scores(row["without"], seeds))) is not None and d.mean >= 0]
        curve = [{"strategy": strategy, "share": share, "compute": share * total,
                  "test_delta": _mean(paired(rerun.test_scores(v, seeds), base)) if v != rerun.baseline.id else 0.0}
                 for share, v in checkpoints]
        unit = Budget.parse(config.compute).unit
        spent = sum(e.result.spent(unit) for e in store.evaluations() if e.split == "val" and e.result)
        return {"strategy": strategy, "default": strategy == DEFAULT, "compute": spent, "unit": unit.value,
                "baseline": str(args.baseline or "the built-in CPU baseline"), "test_delta": _mean(test), "ci_low": test.ci_low if test else 0.0,
                "ci_high": test.ci_high if test else 0.0, "kept": len(result["ablation"]),
                "false_keeps": len(false) if args.false_keeps else math.nan, "kept_changes": " ".join(r["atom"] for r in result["ablation"]),
                "false_kept": " ".join(false), "evaluations": sum(1 for e in store.evaluations() if e.split == "val"),
                "curve": curve}
    finally:
        rerun.close()
        store.close()


def _mean(comparison: Paired | None) -> float:
    return 0.0 if comparison is None else comparison.mean


def _plain_log(strategy: str):
    from search.progress import PlainLog

    class Prefixed(PlainLog):
        def event(self, line: str) -> None:
            super().event(f"{strategy}: {line}")

    return Prefixed()


# ---------------------------------------------------------------- output
def write_csv(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def synthetic_markdown(rows: list[dict], reach: list[dict], command: str) -> str:
    import pandas as pd

    frame = pd.DataFrame(rows)
    table = frame.groupby(["noise", "runs", "strategy"]).agg(
        regret=("regret", "mean"), recall=("recall", "mean"), kept=("kept", "mean"),
        false_keeps=("false_keeps", "mean"), compute_M=("compute", lambda s: s.mean() / 1e6),
        tasks=("task", "nunique")).reset_index()
    reached = pd.DataFrame(reach).groupby(["noise", "runs", "strategy"])["share"].agg(
        lambda s: float(np.nanmedian(s)) if s.notna().any() else math.nan).rename("median_share_to_reach_greedy")
    table = table.join(reached, on=["noise", "runs", "strategy"])
    summary = frame.groupby("strategy").agg(regret=("regret", "mean"), kept=("kept", "sum"),
                                            false_keeps=("false_keeps", "sum")).reset_index()
    summary["false_keep_share"] = summary["false_keeps"] / summary["kept"].clip(lower=1)
    ratio = _regret_ratios(frame)
    return "\n".join([
        "# Search efficiency on the synthetic task (known ground truth)", "",
        f"Command: `{command}` ({datetime.now(timezone.utc):%Y-%m-%d}, {os.cpu_count()} CPU cores). Every strategy "
        "through the same driver at equal compute (training tokens; `runs` full-budget runs each). regret = true "
        "val_bpb of the answer minus the best reachable; recall = share of the truly good features kept; kept / "
        "false_keeps = changes in the answer (features and moved knobs) and those whose true effect there is "
        "harmful; median_share_to_reach_greedy = the share of its compute a strategy needed before its incumbent "
        "was as good as greedy's final answer (median over tasks; nan: never). Means over tasks.", "",
        table.to_markdown(index=False, floatfmt=".4f"), "",
        "Over every setting:", "", summary.to_markdown(index=False, floatfmt=".4f"), "",
        f"Regret of the default ({DEFAULT}) over greedy's, mean of the per-setting ratios of means: {ratio}", ""])


def _regret_ratios(frame) -> str:
    means = frame.groupby(["noise", "runs", "strategy"])["regret"].mean().unstack()
    if DEFAULT not in means or "greedy" not in means:
        return "n/a"
    ratios = means[DEFAULT] / means["greedy"]
    return f"{ratios.mean():.2f} (per setting: " + ", ".join(f"{r:.2f}" for r in ratios) + ")"


def synthetic_plot(curves: list[dict], rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = sorted({(r["noise"], r["runs"]) for r in rows})
    fig, axes = plt.subplots(1, len(settings), figsize=(3.6 * len(settings), 3.4), squeeze=False)
    for ax, (noise, runs) in zip(axes[0], settings):
        grid = np.linspace(0, runs * Budget.parse(synthetic.FULL_BUDGET).amount, 41)
        for strategy in sorted({r["strategy"] for r in rows}):
            tasks = sorted({r["task"] for r in rows if r["strategy"] == strategy})
            values = []
            for task in tasks:
                points = sorted((c["compute"], c["regret"]) for c in curves if (c["strategy"], c["task"], c["noise"],
                                                                                 c["runs"]) == (strategy, task, noise,
                                                                                                runs))
                values.append([next((v for c, v in reversed(points) if c <= x), math.nan) for x in grid])
            ax.plot(grid / 1e6, np.nanmean(np.array(values, dtype=float), axis=0), label=strategy)
        ax.set_title(f"noise {noise}, {runs} runs", fontsize=9)
        ax.set_xlabel("compute (M training tokens)", fontsize=8)
        ax.set_yscale("log")
    axes[0][0].set_ylabel("regret of the incumbent")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def real_markdown(rows: list[dict], command: str) -> str:
    lines = [f"# Search efficiency on the real task ({rows[0]['baseline']} and the catalog)", "",
             f"Command: `{command}` ({datetime.now(timezone.utc):%Y-%m-%d}, {os.cpu_count()} CPU cores). Every "
             f"strategy through `search evolve`'s driver with the same `--compute` ({rows[0]['unit']}). Test delta = "
             "the answer minus the baseline on the held-out test split, fresh seeds; false keeps = kept changes whose "
             "removal does not hurt on those seeds (nan: not measured, --no-false-keeps).", "",
             "| strategy | test delta val_bpb [95% CI] | kept | false keeps | compute | runs |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['strategy']} | {r['test_delta']:+.4f} [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}] | "
                     f"{r['kept']} ({r['kept_changes']}) | {r['false_keeps']} {r['false_kept']} | "
                     f"{Budget(r['compute'], BudgetUnit(r['unit']))} | {r['evaluations']} |")
    return "\n".join(lines) + "\n"


def real_plot(curves: list[dict], unit: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4))
    for strategy in sorted({c["strategy"] for c in curves}):
        points = sorted((c["compute"], c["test_delta"]) for c in curves if c["strategy"] == strategy)
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=strategy)
    ax.set_xlabel(f"compute ({unit})")
    ax.set_ylabel("held-out delta of the incumbent")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",")]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def _names(text: str) -> list[str]:
    names = text.split(",")
    unknown = [n for n in names if n not in STRATEGIES]
    if unknown:
        raise SystemExit(f"unknown strategy {unknown[0]!r}: use some of {', '.join(STRATEGIES)}")
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    tasks = parser.add_subparsers(dest="task", required=True)
    syn = tasks.add_parser("synthetic", help="the synthetic task with known ground truth")
    syn.add_argument("--noise", type=_floats, default=[0.003, 0.01, 0.03], help="per-variant noise sd at full budget")
    syn.add_argument("--runs", type=_ints, default=[16, 36, 80], help="compute, in full-budget runs")
    syn.add_argument("--tasks", type=int, default=6, help="random tasks per noise level")
    syn.add_argument("--strategies", type=_names, default=list(STRATEGIES))
    syn.add_argument("--quick", action="store_true", help="3 tasks, noise 0.01 and 0.03, 16 and 36 runs")
    syn.add_argument("--out", type=Path, required=True, help="the CSV to write (.md and .png beside it)")
    real = tasks.add_parser("real", help="the CPU baseline and the catalog, real runs")
    real.add_argument("--compute", default="6M", help="what each strategy spends: training tokens (6M) or FLOPs "
                      "(29.4Tflop: 20 runs of the baseline's 1.47Tflop, the compute-matched unit)")
    real.add_argument("--budget", default="300k", help="one full run (search evolve's default on CPU)")
    real.add_argument("--baseline", type=Path, default=None, help="the script to evolve, with its local modules "
                      "(default: the built-in CPU baseline)")
    real.add_argument("--strategies", type=_names, default=["additive", "greedy"])
    real.add_argument("--runs-dir", default="runs/efficiency", help="one run directory per strategy (reused)")
    real.add_argument("--workers", type=int, default=2)
    real.add_argument("--seed", type=int, default=0)
    real.add_argument("--test-seeds", type=int, default=3)
    real.add_argument("--no-false-keeps", dest="false_keeps", action="store_false",
                      help="skip leaving each kept change out on the test seeds (the slowest part)")
    real.add_argument("--out", type=Path, required=True, help="the CSV to write (.md and .png beside it)")
    args = parser.parse_args()

    command = "python benchmarks/search_efficiency.py " + " ".join(sys.argv[1:])
    if args.task == "synthetic":
        if args.quick:
            args = replace_args(args, tasks=3, noise=[0.01, 0.03], runs=[16, 36])
        rows, curves = run_synthetic(args)
        reach = compute_to_reach(curves, rows)
        write_csv(rows, args.out)
        write_csv(curves, args.out.with_name(args.out.stem + "_anytime.csv"))
        text = synthetic_markdown(rows, reach, command)
        synthetic_plot(curves, rows, args.out.with_suffix(".png"))
    else:
        rows = [real_run(strategy, args) for strategy in args.strategies]
        curves = [point for row in rows for point in row.pop("curve")]
        write_csv(rows, args.out)
        write_csv(curves, args.out.with_name(args.out.stem + "_anytime.csv"))
        text = real_markdown(rows, command)
        real_plot(curves, rows[0]["unit"], args.out.with_suffix(".png"))
    args.out.with_suffix(".md").write_text(text)
    print(text)


def replace_args(args: argparse.Namespace, **changes) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), **changes})


if __name__ == "__main__":
    main()
