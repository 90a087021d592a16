"""Should a CPU search's budget be FLOPs rather than tokens?

    .venv/bin/python benchmarks/compute_unit.py              # about 10 minutes on 2 cores

Under a token budget a move that grows the model also buys compute: greedy's kept changes on the
real-task benchmark made each token cost 3.4x, which flatters wider and deeper models and
transfers badly to a GPU time budget. A FLOP budget (trainer/budget.py: each served token costs
3x the model's forward FLOPs, counted by the trusted scorer) charges for it instead. For the
baseline and the catalog moves that change the model's size, on paired seeds, this measures the
paired delta against the baseline at a token budget and at the FLOP budget that gives the
baseline the same tokens, with the tokens each run got and the CPU seconds it spent; and how
steady CPU seconds per FLOP are on this shared machine (what a CPU-time budget would add as noise
where a FLOP budget adds none).

Writes benchmarks/results/compute_unit.csv and compute_unit.md.
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path

from mutations.catalog import MOVES
from trainer.baselines import BASELINE
from trainer.batch_server import TRAINING_FLOPS_PER_FORWARD
from trainer.budget import Budget
from trainer.runner import build_spec, default_timeout, run_variant

RESULTS = Path(__file__).resolve().parent / "results"
BASELINE_FORWARD_FLOPS_PER_TOKEN = 1_638_400  # the CPU baseline's, as the scorer counts it (4 x 128, T=128)


def source_of(name: str) -> str:
    return BASELINE.read_text() if name == "baseline" else MOVES[name].apply(BASELINE.read_text())


def run(name: str, budget: str, seed: int) -> dict:
    spec = build_spec(budget, seed=seed, device="cpu", threads=0)
    result = run_variant(source_of(name), spec, timeout_s=default_timeout(spec.budget))
    if not result.status.is_ok():
        raise SystemExit(f"{name} at {budget} (seed {seed}) ended {result.status.value}: {result.message}")
    row = {"variant": name, "budget": budget, "unit": spec.budget.unit.value, "seed": seed,
           "val_bpb": round(result.val_bpb, 4), "tokens": result.tokens, "flops": result.flops,
           "cpu_s": round(result.cpu_seconds, 2), "compute_ratio": result.extra.get("compute_ratio")}
    print(row, file=sys.stderr, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", default="150k", help="the token budget; the FLOP budget gives the baseline as many")
    parser.add_argument("--moves", default="wider,deeper,swiglu,value_embeddings,bigram_embedding")
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()

    tokens = Budget.parse(args.tokens).amount
    flops = f"{TRAINING_FLOPS_PER_FORWARD * BASELINE_FORWARD_FLOPS_PER_TOKEN * tokens:.6g}flop"
    names = ["baseline", *args.moves.split(",")]
    rows = [run(name, budget, seed) for budget in (args.tokens, flops) for name in names for seed in range(args.seeds)]

    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / "compute_unit.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    mean = lambda name, budget, key: statistics.mean(  # noqa: E731
        r[key] for r in rows if r["variant"] == name and r["budget"] == budget)
    table = []
    for name in names:
        cells = [name, f"{mean(name, flops, 'flops') / mean(name, flops, 'tokens'):.3g}"]
        for budget in (args.tokens, flops):
            delta = mean(name, budget, "val_bpb") - mean("baseline", budget, "val_bpb")
            cells += [f"{delta:+.3f}", f"{mean(name, budget, 'tokens'):,.0f}", f"{mean(name, budget, 'cpu_s'):.1f}"]
        table.append("| " + " | ".join(cells) + " |")
    per_flop = [r["cpu_s"] / r["flops"] * 1e9 for r in rows]
    lines = [
        "# Token or FLOP budgets on CPU", "",
        f"Command: `.venv/bin/python benchmarks/compute_unit.py {' '.join(sys.argv[1:])}` "
        f"({datetime.now(timezone.utc):%Y-%m-%d}, 2 CPU cores shared with other work, {args.seeds} paired seeds).",
        "", f"Token budget {args.tokens}; FLOP budget {flops} (the baseline's training FLOPs at {args.tokens}).", "",
        "| variant | training FLOPs per token | delta at tokens | tokens | CPU s | delta at FLOPs | tokens | CPU s |",
        "|---|---|---|---|---|---|---|---|", *table, "",
        f"CPU seconds per GFLOP over all {len(rows)} runs: mean {statistics.mean(per_flop):.3f}, "
        f"sd {statistics.stdev(per_flop):.3f} ({100 * statistics.stdev(per_flop) / statistics.mean(per_flop):.0f}%): "
        "the noise a CPU-time budget would add, where a FLOP budget adds none (it is counted, not timed).", "",
    ]
    (RESULTS / "compute_unit.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
