"""CPU baseline benchmark: how the built-in train.py learns, how noisy it is, what the runner costs.

    .venv/bin/python benchmarks/cpu_baseline.py            # about 15 minutes on 2 cores

Runs the baseline through the sandboxed runner, one evaluation at a time, and writes
benchmarks/results/cpu_baseline.csv (one row per evaluation) and cpu_baseline.md (the
summary with the command, machine and versions). Measured:
  * val_bpb after 15 s, 60 s and 180 s wall-clock budgets (it must fall clearly);
  * seed-to-seed spread of val_bpb over 5 seeds at 60 s, and at a fixed token budget
    (the CPU default unit: load on a shared machine moves a wall-clock result, not a
    token-budget one);
  * tokens/s, and runner overhead = wall time - training time per evaluation.
"""
from __future__ import annotations

import argparse
import csv
import platform
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

from trainer.baselines import BASELINE
from trainer.runner import build_spec, default_timeout, run_variant

RESULTS = Path(__file__).resolve().parent / "results"
COLUMNS = ["budget", "unit", "seed", "status", "val_bpb", "steps", "tokens", "tokens_per_second",
           "training_seconds", "wall_seconds", "overhead_seconds", "peak_memory_mb"]


def evaluate(budget: str, seed: int, threads: int) -> dict:
    spec = build_spec(budget, seed=seed, device="cpu", threads=threads)
    result = run_variant(BASELINE.read_text(), spec, timeout_s=default_timeout(spec.budget))
    row = {"budget": budget, "unit": result.budget_unit, "seed": seed, "status": result.status.value,
           "val_bpb": result.val_bpb, "steps": result.steps, "tokens": result.tokens,
           "tokens_per_second": round(result.tokens_per_second), "training_seconds": round(result.training_seconds, 2),
           "wall_seconds": round(result.wall_seconds, 2), "overhead_seconds": round(result.overhead_seconds, 2),
           "peak_memory_mb": round(result.peak_memory_mb)}
    print(", ".join(f"{k}={v}" for k, v in row.items()), file=sys.stderr, flush=True)
    return row


def spread(rows: list[dict]) -> str:
    values = [r["val_bpb"] for r in rows if r["val_bpb"] is not None]
    return f"mean {statistics.mean(values):.4f}, sd {statistics.stdev(values):.4f} over {len(values)} seeds"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budgets", default="15s,60s,180s", help="wall-clock budgets for the learning curve")
    parser.add_argument("--seeds", type=int, default=5, help="seeds for the spread measurements")
    parser.add_argument("--spread-budget", default="60s", help="wall-clock budget of the seed spread")
    parser.add_argument("--token-budget", default="1M", help="token budget of the second seed spread")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    args = parser.parse_args()

    curve = [evaluate(budget, 0, args.threads) for budget in args.budgets.split(",")]
    reuse = [r for r in curve if r["budget"] == args.spread_budget]
    time_spread = reuse + [evaluate(args.spread_budget, s, args.threads) for s in range(len(reuse), args.seeds)]
    token_spread = [evaluate(args.token_budget, s, args.threads) for s in range(args.seeds)]
    rows = curve + [r for r in time_spread if r not in reuse] + token_spread

    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / "cpu_baseline.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    overheads = [r["overhead_seconds"] for r in rows]
    lines = [
        "# CPU baseline",
        "",
        f"Command: `.venv/bin/python benchmarks/cpu_baseline.py` ({datetime.now(timezone.utc):%Y-%m-%d}, "
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__})",
        "",
        "| budget | val_bpb | steps | tokens/s | training s | wall s |",
        "|---|---|---|---|---|---|",
        *(f"| {r['budget']} | {r['val_bpb']:.4f} | {r['steps']} | {r['tokens_per_second']} | "
          f"{r['training_seconds']} | {r['wall_seconds']} |" for r in curve),
        "",
        f"Seed spread at {args.spread_budget}: {spread(time_spread)}.",
        f"Seed spread at {args.token_budget} tokens: {spread(token_spread)}.",
        f"Runner overhead (wall - training) per evaluation: median {statistics.median(overheads):.2f} s, "
        f"max {max(overheads):.2f} s.",
    ]
    (RESULTS / "cpu_baseline.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
