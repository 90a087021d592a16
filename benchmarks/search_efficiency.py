"""Does evotrain's search earn its complexity? Four strategies, one baseline, the same compute.

    # the real task: the CPU baseline, the catalog, real sandboxed runs (about 4 x the evolve time)
    .venv/bin/python benchmarks/search_efficiency.py real --generations 1 --time 60min

    # the synthetic task: known ground truth, thousands of evaluations in minutes
    .venv/bin/python benchmarks/search_efficiency.py synthetic --noise 0.003,0.01,0.03 --children 16,48,128 --tasks 3

Strategies (benchmarks/strategies.py): `evolve` (search evolve: multi-fidelity, paired seeds,
Optuna, merges, combine), `greedy` (autoresearch: one run per idea at the full budget, keep
if lower), `random` (random stacks of moves, best run wins) and `optuna` (TPE on the
baseline's knobs only). Evolve runs first; the others get the training tokens it used
(everything but its own held-out test), so compute is equal by construction.

Each strategy's result is then run against the baseline on the held-out test split with
fresh seeds (the same seeds for all): the test delta with its 95% CI. For each change it
kept, the result without that change runs on the same seeds: a kept change whose removal
improves the result is a false keep. The synthetic task also knows the truth: recall of
the truly good moves, false keeps by their true effect, and regret (true val_bpb of the
result minus the best reachable).

Writes benchmarks/results/search_efficiency_<task>.csv, .md and (synthetic) .png.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import strategies
import synthetic_task as synthetic
from population.stats import paired
from strategies import Job, Outcome, Problem
from trainer.budget import Budget

RESULTS = Path(__file__).resolve().parent / "results"
TEST_SEEDS_FROM = 3000  # apart from every seed the search uses (search/ladder.py: 1.., 100.., 500.., 1000.., 2000..)


# ---------------------------------------------------------------- measuring outcomes on fresh seeds
class Measurements:
    """Held-out runs shared by every strategy: the same source on the same seed runs once.

    With a `ledger` file, every batch of finished runs is appended to it and read back on the
    next start, so an interrupted real comparison (hours of runs) resumes where it stopped."""

    def __init__(self, problem: Problem, seeds: int, ledger: Path | None = None, batch: int = 0,
                 offline: bool = False) -> None:
        self.problem, self.seeds = problem, [TEST_SEEDS_FROM + i for i in range(seeds)]
        self.ledger, self.batch, self.offline = ledger, batch, offline  # offline: report the ledger, run nothing
        self._scores: dict[tuple[str, int], float | None] = {}
        if ledger and ledger.exists():
            for line in ledger.read_text().splitlines():
                entry = json.loads(line)
                self._scores[entry["source"], entry["seed"]] = entry["val_bpb"]

    def run(self, sources: list[str]) -> None:
        if self.offline:
            return
        jobs = [Job(source, self.problem.budget, seed, "test") for source in dict.fromkeys(sources)
                for seed in self.seeds if (source, seed) not in self._scores]
        size = self.batch or len(jobs) or 1
        for start in range(0, len(jobs), size):
            batch = jobs[start:start + size]
            for job, value in zip(batch, self.problem.run_jobs(batch)):
                self._scores[job.source, job.seed] = value
                if self.ledger:
                    with open(self.ledger, "a") as f:
                        f.write(json.dumps({"source": job.source, "seed": job.seed, "val_bpb": value}) + "\n")

    def has_run(self, source: str) -> bool:
        return all((source, seed) in self._scores for seed in self.seeds)

    def scores(self, source: str) -> dict[int, float]:
        return {seed: self._scores[source, seed] for seed in self.seeds
                if self._scores.get((source, seed)) is not None}

    def delta(self, source: str, reference: str):
        return paired(self.scores(source), self.scores(reference))


def measured_row(outcome: Outcome, measurements: Measurements, baseline: str, false_keeps: bool = True) -> dict:
    """The outcome against the baseline on fresh seeds; with `false_keeps`, also each leave-one-out
    (for the real task the costly part: one more variant per kept change)."""
    leave_one_out = [s for s in outcome.kept.values() if s and false_keeps]
    measurements.run([baseline, outcome.source, *leave_one_out])
    test = measurements.delta(outcome.source, baseline) if outcome.source != baseline else None
    measured = false_keeps and all(measurements.has_run(s) for s in leave_one_out)  # offline: maybe not yet
    hurting = [name for name, without in outcome.kept.items()
               if measured and without and (d := measurements.delta(outcome.source, without)) and d.mean > 0]
    return {
        "strategy": outcome.strategy, "compute_tokens": outcome.tokens, "evaluations": outcome.evaluations,
        "test_delta": test.mean if test else 0.0, "ci_low": test.ci_low if test else 0.0,
        "ci_high": test.ci_high if test else 0.0, "test_n": test.n if test else 0,
        "kept": len(outcome.kept), "kept_changes": " ".join(outcome.kept),
        "false_keeps": len(hurting) if measured else "",
        "false_kept": " ".join(hurting) if measured or not false_keeps else "(not all runs finished)",
    }


# ---------------------------------------------------------------- the synthetic task
def synthetic_problem(task: synthetic.SyntheticTask) -> Problem:
    full = Budget.parse(synthetic.FULL_BUDGET).amount

    def run_jobs(jobs: list[Job]) -> list[float]:
        return [task.observed(j.source, Budget.parse(j.budget).amount / full, j.seed, j.split)
                for j in jobs]

    moves = {f"feature_{i:02d}": partial(synthetic.switch_on, feature=f"feature_{i:02d}")
             for i in range(task.features)}
    return Problem(synthetic.standin_source(task), moves, synthetic.FULL_BUDGET, run_jobs)


def synthetic_evolve(task: synthetic.SyntheticTask, children: int, seed: int, work: Path) -> Outcome:
    from search.config import EvolveConfig
    from search.evolve import Evolution
    from search.progress import NullReporter

    baseline = work / "standin.py"
    baseline.write_text(synthetic.standin_source(task))
    population = 8
    config = EvolveConfig(
        run_dir=work / "evolve", baseline=baseline, baseline_hash=hashlib.sha256(baseline.read_bytes()).hexdigest()[:16],
        budget=synthetic.FULL_BUDGET, device="cpu", device_kind="cpu", workers=2, population=population,
        generations=max(1, math.ceil(children / population)), time_limit=None, seed=seed)
    Evolution(config, NullReporter(), source=synthetic.SyntheticSource(task, seed),
              executor=synthetic.SyntheticExecutor(task)).run()
    return strategies.evolve_outcome(config.run_dir)


def truth_row(task: synthetic.SyntheticTask, outcome: Outcome, baseline: str) -> dict:
    on, knobs = synthetic.phenotype(outcome.source)
    _, defaults = synthetic.phenotype(baseline)
    moves = [f"feature_{i:02d}" for i in sorted(on)]
    moved = [k for k in knobs if knobs[k] != defaults[k]]
    good = task.good()
    return {
        "true_delta": task.score(on, knobs) - task.score(frozenset(), defaults),
        "regret": task.score(on, knobs) - task.optimum(),
        "recall": len(on & good) / len(good),
        "moves_kept": len(moves),
        "true_false_moves": sum(task.marginal(on, knobs, move) > 0 for move in moves),
        "knobs_moved": len(moved),
        "true_false_knobs": sum(task.marginal(on, knobs, knob) > 0 for knob in moved),
        "knob_harm": sum(max(0.0, task.marginal(on, knobs, knob)) for knob in moved),
    }


def run_synthetic(args: argparse.Namespace) -> list[dict]:
    rows = []
    for noise in _floats(args.noise):
        for task_seed in range(args.tasks):
            task = synthetic.make_task(task_seed, noise=noise)
            for children in _ints(args.children):
                started = time.perf_counter()
                problem = synthetic_problem(task)
                with tempfile.TemporaryDirectory() as work:
                    outcomes = [synthetic_evolve(task, children, task_seed, Path(work))]
                tokens = outcomes[0].tokens
                outcomes += [strategies.greedy(problem, tokens, task_seed),
                             strategies.random_stacks(problem, tokens, task_seed),
                             strategies.optuna_knobs(problem, tokens, task_seed)]
                measurements = Measurements(problem, args.test_seeds)
                for outcome in outcomes:
                    rows.append({"task": task_seed, "noise": noise, "children": children,
                                 **measured_row(outcome, measurements, problem.baseline),
                                 **truth_row(task, outcome, problem.baseline)})
                    print(_brief(rows[-1]), file=sys.stderr, flush=True)
                print(f"noise {noise} task {task_seed} children {children}: {time.perf_counter() - started:.0f}s",
                      file=sys.stderr, flush=True)
    return rows


# ---------------------------------------------------------------- the real task
def real_problem(budget: str, workers: int) -> Problem:
    from mutations.catalog import MOVES
    from trainer.baselines import BASELINE
    from trainer.runner import build_spec, default_timeout, run_variant
    from trainer.spares import Spares

    cores = os.cpu_count() or 1
    spares = Spares()  # as in the search: the next run's interpreter starts while this one trains

    def run_one(job: Job, threads: int) -> float | None:
        spec = build_spec(job.budget, seed=job.seed, device="cpu", split=job.split, threads=threads)
        result = run_variant(job.source, spec, timeout_s=default_timeout(spec.budget), spares=spares)
        return result.val_bpb if result.status.is_ok() else None

    def run_jobs(jobs: list[Job]) -> list[float | None]:
        at_once = max(1, min(workers, len(jobs)))
        with ThreadPoolExecutor(at_once) as pool:
            return list(pool.map(lambda job: run_one(job, max(1, cores // at_once)), jobs))

    moves = {name: move.apply for name, move in MOVES.items() if move.targets_baseline and not move.cuda_only}
    return Problem(BASELINE.read_text(), moves, budget, run_jobs)


def real_evolve(args: argparse.Namespace) -> Outcome:
    run_dir = Path(args.run_dir)
    if not (run_dir / "evotrain.db").exists() or "result" not in _meta(run_dir):
        limits = ["--time", args.time] + (["--generations", str(args.generations)] if args.generations else [])
        subprocess.run([sys.executable, "-m", "search", "evolve", "--run-dir", str(run_dir), "--budget", args.budget,
                        *limits], check=True)
    return strategies.evolve_outcome(run_dir)


def _meta(run_dir: Path) -> dict:
    from population.store import Store

    store = Store.in_run_dir(run_dir)
    try:
        return store.meta()
    finally:
        store.close()


def run_real(args: argparse.Namespace) -> list[dict]:
    problem = real_problem(args.budget, args.workers)
    started = time.perf_counter()
    outcomes = [real_evolve(args)]
    tokens = outcomes[0].tokens
    print(f"evolve used {tokens:,} tokens in {outcomes[0].evaluations} evaluations", file=sys.stderr, flush=True)
    saved = Path(args.run_dir) / "strategies"  # each finished strategy's outcome: a rerun skips it
    saved.mkdir(exist_ok=True)
    for name in args.strategies.split(","):
        strategy = strategies.COMPARED[name]
        path = saved / f"{name}.json"
        if not path.exists() and args.from_ledger:
            continue
        if not path.exists():
            path.write_text(json.dumps(asdict(strategy(problem, tokens, args.seed))))
        outcomes.append(Outcome(**json.loads(path.read_text())))
        print(f"{name}: {outcomes[-1].evaluations} runs, kept {list(outcomes[-1].kept)} "
              f"({time.perf_counter() - started:.0f}s)", file=sys.stderr, flush=True)
    # batches of two rounds of the workers: each batch is saved before the next starts
    measurements = Measurements(problem, args.test_seeds, saved / "test_runs.jsonl", batch=2 * args.workers,
                                offline=args.from_ledger)
    measurements.run([problem.baseline, *(outcome.source for outcome in outcomes)])  # test deltas before false keeps
    if not args.no_false_keeps:
        for outcome in sorted(outcomes, key=lambda o: len(o.kept)):  # the fewest leave-one-out runs first
            measurements.run([source for source in outcome.kept.values() if source])
    rows = []
    for outcome in outcomes:
        rows.append(measured_row(outcome, measurements, problem.baseline, not args.no_false_keeps))
        print(_brief(rows[-1]), file=sys.stderr, flush=True)
    return rows


# ---------------------------------------------------------------- output
def _brief(row: dict) -> str:
    return (f"{row['strategy']:7s} test {row['test_delta']:+.4f} [{row['ci_low']:+.4f}, {row['ci_high']:+.4f}] "
            f"kept {row['kept']} false {row['false_keeps']}" + (f" regret {row['regret']:.4f} recall "
                                                              f"{row['recall']:.2f}" if "regret" in row else ""))


def write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def real_markdown(rows: list[dict], command: str, partial: bool = False) -> str:
    lines = ["# Search efficiency on the real task (the CPU baseline and the catalog)", "",
             f"Command: `{command}` ({datetime.now(timezone.utc):%Y-%m-%d}, {os.cpu_count()} CPU cores). Test delta = "
             "the strategy's result minus the baseline on the held-out test split, fresh seeds; false keeps = kept "
             "changes whose removal lowers val_bpb on those seeds. Compute is in training tokens, the budget's unit: "
             "a kept change that makes the model bigger costs more time per token." + (
                 " Reported with `--from-ledger` while the runs went on: false keeps only where all of a "
                 "strategy's leave-one-out runs had finished." if partial else ""), "",
             "| strategy | test delta val_bpb [95% CI] | n | kept | false keeps | compute (M tokens) | runs |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['strategy']} | {r['test_delta']:+.4f} [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}] | "
                     f"{r['test_n']} | {r['kept']} ({r['kept_changes']}) | {r['false_keeps']} {r['false_kept']} | "
                     f"{r['compute_tokens'] / 1e6:.1f} | {r['evaluations']} |")
    return "\n".join(lines) + "\n"


def synthetic_markdown(rows: list[dict], command: str) -> str:
    import pandas as pd

    frame = pd.DataFrame(rows)
    table = frame.groupby(["noise", "children", "strategy"]).agg(
        regret=("regret", "mean"), recall=("recall", "mean"), test_delta=("test_delta", "mean"),
        kept=("kept", "mean"), false_keeps=("false_keeps", "mean"), moves_kept=("moves_kept", "mean"),
        true_false_moves=("true_false_moves", "mean"), knobs_moved=("knobs_moved", "mean"),
        true_false_knobs=("true_false_knobs", "mean"), knob_harm=("knob_harm", "mean"),
        compute_M=("compute_tokens", lambda s: s.mean() / 1e6), tasks=("task", "nunique")).reset_index()
    return "\n".join([
        "# Search efficiency on the synthetic task (known ground truth)", "",
        f"Command: `{command}` ({datetime.now(timezone.utc):%Y-%m-%d}). Means over tasks. regret = true val_bpb "
        "of the result minus the best reachable; recall = share of the truly good moves kept; kept / false_keeps = "
        "the changes the strategy kept (moves, knob trials) and those whose removal improved the result on fresh "
        "noisy seeds; moves_kept / true_false_moves = features on in the result and those whose true effect there "
        "is harmful; knobs_moved / true_false_knobs / knob_harm = the same for knob values, with their summed true "
        "harm; compute in millions of training tokens (equal per row by construction).", "",
        table.to_markdown(index=False, floatfmt=".4f"), ""])


def synthetic_plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    frame = pd.DataFrame(rows)
    noises = sorted(frame.noise.unique())
    fig, axes = plt.subplots(2, len(noises), figsize=(4.2 * len(noises), 7), squeeze=False, sharey="row")
    for column, noise in enumerate(noises):
        part = frame[frame.noise == noise]
        for strategy, group in part.groupby("strategy"):
            means = group.groupby("children")[["compute_tokens", "regret", "recall"]].mean()
            axes[0][column].plot(means.compute_tokens / 1e6, means.regret, marker="o", label=strategy)
            axes[1][column].plot(means.compute_tokens / 1e6, means.recall, marker="o", label=strategy)
        axes[0][column].set_title(f"noise sd {noise}")
        axes[1][column].set_xlabel("compute (M training tokens)")
    axes[0][0].set_ylabel("regret (val_bpb above the best reachable)")
    axes[1][0].set_ylabel("recall of the truly good moves")
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",")]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    tasks = parser.add_subparsers(dest="task", required=True)
    real = tasks.add_parser("real", help="the CPU baseline and the catalog, real runs")
    real.add_argument("--time", default="10min", help="search evolve's --time (its other options: the defaults)")
    real.add_argument("--generations", type=int, default=0, help="search evolve's --generations: a limit in "
                      "children, so a loaded machine changes the wall time, not the result")
    real.add_argument("--budget", default="300k", help="the full budget (search evolve's default on CPU)")
    real.add_argument("--run-dir", default="runs/efficiency-evolve", help="evolve's run directory (reused if done)")
    real.add_argument("--workers", type=int, default=2, help="held-out runs at a time")
    real.add_argument("--seed", type=int, default=0, help="seed of the greedy, random and optuna strategies")
    real.add_argument("--test-seeds", type=int, default=3)
    real.add_argument("--strategies", default="greedy,random,optuna", help="which to compare with evolve")
    real.add_argument("--from-ledger", action="store_true", help="run nothing: report the finished strategies and "
                      "held-out runs (false keeps only where all of a strategy's leave-one-out runs finished)")
    real.add_argument("--no-false-keeps", action="store_true", help="skip the leave-one-out runs of every kept "
                      "change (the costly part with big kept stacks)")
    syn = tasks.add_parser("synthetic", help="the synthetic task with known ground truth")
    syn.add_argument("--noise", default="0.003,0.01,0.03", help="per-variant noise sd at the full budget")
    syn.add_argument("--children", default="16,48,128", help="evolve's children (sets the compute of each row)")
    syn.add_argument("--tasks", type=int, default=3, help="random tasks per noise level")
    syn.add_argument("--test-seeds", type=int, default=3)
    args = parser.parse_args()

    command = "python benchmarks/search_efficiency.py " + " ".join(a for a in sys.argv[1:] if a != "--from-ledger")
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"search_efficiency_{args.task}"
    if args.task == "real":
        rows = run_real(args)
        text = real_markdown(rows, command, partial=args.from_ledger)
    else:
        rows = run_synthetic(args)
        text = synthetic_markdown(rows, command)
        synthetic_plot(rows, stem.with_suffix(".png"))
    write_csv(rows, stem.with_suffix(".csv"))
    stem.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
