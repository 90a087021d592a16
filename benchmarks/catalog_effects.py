"""Every catalog move alone against the CPU baseline, on paired seeds: the catalog's ground truth.

    .venv/bin/python benchmarks/catalog_effects.py            # about 30 minutes on 2 cores

Each move is applied to the built-in baseline (after the moves it builds on, e.g. qk_norm
before attn_temperature) and trained at one fixed token budget on the same seeds as the
baseline, so each seed gives a paired difference. Writes benchmarks/results/
catalog_effects.csv (move, category, n, mean delta val_bpb, stderr, tokens/s ratio) and
catalog_effects.md (top 10, bottom 5, the command). A token budget keeps the deltas free of
machine load; tokens/s, measured with two runs sharing the cores, is only a rough ratio.

    .venv/bin/python benchmarks/catalog_effects.py --stack rope+muon --stack rope+muon+wsd_schedule

measures moves merged into one variant (mutations.merge) instead: do gains add up?
Results go to catalog_stacks.csv / .md.
"""
from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from functools import reduce
from pathlib import Path

from mutations.catalog import MOVES
from mutations.diff import structural_diff
from mutations.edits import apply_mutation
from mutations.merge import merge
from trainer.baselines import BASELINE
from trainer.result import EvalResult
from trainer.runner import build_spec, default_timeout, run_variant

RESULTS = Path(__file__).resolve().parent / "results"


def variant(name: str) -> str:
    """The baseline, one move (after the moves it builds on), or `a+b+c`: the moves merged."""
    source = BASELINE.read_text()
    if name == "baseline":
        return source
    if "+" in name:
        changes = [structural_diff(source, variant(part), name=part) for part in name.split("+")]
        return apply_mutation(source, reduce(lambda a, b: merge(source, a, b), changes))
    move = MOVES[name]
    for required in move.requires:
        source = MOVES[required].apply(source)
    return move.apply(source)


def evaluate(job: tuple[str, int], budget: str) -> tuple[str, int, EvalResult]:
    name, seed = job
    spec = build_spec(budget, seed=seed, device="cpu", threads=1)
    result = run_variant(variant(name), spec, timeout_s=default_timeout(spec.budget))
    print(f"{name:22s} seed {seed}: {result.status.value} {result.val_bpb}", file=sys.stderr, flush=True)
    return name, seed, result


def summarise(name: str, runs: dict[int, EvalResult], baseline: dict[int, EvalResult]) -> dict:
    deltas = [runs[s].val_bpb - baseline[s].val_bpb for s in runs
              if runs[s].val_bpb is not None and baseline[s].val_bpb is not None]
    speed = [r.tokens_per_second for r in runs.values() if r.status.is_ok()]
    base_speed = statistics.mean(r.tokens_per_second for r in baseline.values())
    move = MOVES.get(name)
    return {
        "move": name, "category": move.category if move else "stack", "requires": "+".join(move.requires) if move else "",
        "n": len(deltas),
        "mean_delta": statistics.mean(deltas) if deltas else math.nan,
        "stderr": statistics.stdev(deltas) / math.sqrt(len(deltas)) if len(deltas) > 1 else math.nan,
        "tokens_per_s_ratio": statistics.mean(speed) / base_speed if speed else math.nan,
        "statuses": ",".join(sorted({r.status.value for r in runs.values()})),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", default="300k", help="token budget of every run")
    parser.add_argument("--seeds", type=int, default=3, help="paired seeds per move (and for the baseline)")
    parser.add_argument("--workers", type=int, default=2, help="runs at a time, one torch thread each")
    parser.add_argument("--moves", default="", help="comma-separated subset (default: every move that applies, "
                        "unless --stack is given)")
    parser.add_argument("--stack", action="append", default=[], help="moves merged into one variant, a+b+c; "
                        "may be repeated (results go to catalog_stacks.*)")
    parser.add_argument("--output", default="", help="results file name under benchmarks/results/ (default: "
                        "catalog_effects, or catalog_stacks with --stack)")
    args = parser.parse_args()

    if args.moves:
        names = args.moves.split(",")
    else:
        names = [] if args.stack else [m.name for m in MOVES.values() if m.targets_baseline]
    names += args.stack
    output = args.output or ("catalog_stacks" if args.stack else "catalog_effects")
    jobs = [(name, seed) for seed in range(args.seeds) for name in ["baseline", *names]]
    runs: dict[str, dict[int, EvalResult]] = {}
    with ThreadPoolExecutor(args.workers) as pool:
        for name, seed, result in pool.map(lambda job: evaluate(job, args.budget), jobs):
            runs.setdefault(name, {})[seed] = result
    baseline = runs.pop("baseline")
    rows = sorted((summarise(name, r, baseline) for name, r in runs.items()),
                  key=lambda row: (math.isnan(row["mean_delta"]), row["mean_delta"]))

    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / f"{output}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    base_bpb = [r.val_bpb for r in baseline.values()]

    def line(row: dict) -> str:
        return (f"| {row['move']} | {row['mean_delta']:+.4f} | {row['stderr']:.4f} | {row['tokens_per_s_ratio']:.2f} "
                f"| {row['statuses']} |")

    header = ["| move | mean delta val_bpb | stderr | tokens/s ratio | status |", "|---|---|---|---|---|"]
    text = [
        f"# Catalog {'stacks' if args.stack else 'moves alone'} vs the CPU baseline",
        "",
        f"Command: `.venv/bin/python benchmarks/catalog_effects.py {' '.join(sys.argv[1:])}` "
        f"({datetime.now(timezone.utc):%Y-%m-%d}). Baseline val_bpb "
        f"{statistics.mean(base_bpb):.4f} (sd {statistics.stdev(base_bpb):.4f} over {len(base_bpb)} seeds). "
        "Negative delta = better. Moves that build on another are measured with it (column requires in the CSV).",
        "",
        "Top 10:", "", *header, *(line(r) for r in rows[:10]),
        "", "Bottom 5:", "", *header, *(line(r) for r in rows[-5:]),
    ]
    (RESULTS / f"{output}.md").write_text("\n".join(text) + "\n")
    print("\n".join(text))


if __name__ == "__main__":
    main()
