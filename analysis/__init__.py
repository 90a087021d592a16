"""pandas views of a run: results, ablation, lineage, fidelity correlation, knob importance, cost.

    import analysis
    run = analysis.load("runs/evolve")   # a run directory, its evotrain.db, or an SQLAlchemy URL
    run.ablation                         # DataFrames; help(analysis.Run) lists every column
    run.stack_total()                    # the stack's delta beside the sum of its parts
    run.summary()                        # headline numbers as a dict

Every table is recomputed from the stored evaluations (paired per seed, as the search
judged them), so its numbers can be checked by hand from `run.evaluations`. The frames
are plain: `to_csv` and `to_markdown` work on each.
Module map: columns (the documented column lists), tables (store records as frames),
effects (ablation, stack total, held-out test, fidelity), costs (compute, LLM usage,
knob importance), run (load and Run).
"""
from __future__ import annotations

from analysis.columns import COLUMNS
from analysis.run import Run, load

__all__ = ["COLUMNS", "Run", "load"]
