"""Does a short run predict a long one? Catalog moves ranked at a low budget against the full budget.

    .venv/bin/python benchmarks/catalog_effects.py --budget 33.333k --seeds 2 --output catalog_effects_33k
    .venv/bin/python benchmarks/catalog_effects.py --budget 100k --seeds 2 --output catalog_effects_100k
    .venv/bin/python benchmarks/fidelity.py catalog_effects_33k catalog_effects_100k --reference catalog_effects

Reads the per-move mean deltas of each catalog_effects run (benchmarks/results/NAME.csv)
and reports, for each low budget, the rank correlation (Spearman, Kendall) with the
reference budget over the moves both measured, and the moves whose sign differs: the
ones a successive-halving rung at that budget would wrongly stop or wrongly promote.
Writes benchmarks/results/fidelity.md.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from population.stats import rank_correlation  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def deltas(name: str) -> dict[str, float]:
    with open(RESULTS / f"{name}.csv") as f:
        return {row["move"]: float(row["mean_delta"]) for row in csv.DictReader(f) if row["mean_delta"] != "nan"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("low", nargs="+", help="catalog_effects result names at lower budgets")
    parser.add_argument("--reference", default="catalog_effects", help="the result name at the full budget")
    args = parser.parse_args()

    reference = deltas(args.reference)
    lines = ["# Short runs against the full budget (catalog moves alone, paired deltas)", "",
             f"Command: `.venv/bin/python benchmarks/fidelity.py {' '.join(sys.argv[1:])}`", "",
             "| low budget run | moves | spearman | kendall | sign flips (low -> reference) |", "|---|---|---|---|---|"]
    for name in args.low:
        low = deltas(name)
        common = sorted(set(low) & set(reference))
        correlation = rank_correlation([low[m] for m in common], [reference[m] for m in common])
        flips = [f"{m} {low[m]:+.2f}->{reference[m]:+.2f}" for m in common
                 if (low[m] < 0) != (reference[m] < 0) and abs(reference[m]) > 0.02]
        rho, tau = correlation if correlation else (float("nan"), float("nan"))
        lines.append(f"| {name} | {len(common)} | {rho:.2f} | {tau:.2f} | {', '.join(flips) or '-'} |")
    (RESULTS / "fidelity.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
