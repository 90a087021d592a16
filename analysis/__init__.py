"""pandas views of a run: results, ablation, lineage, fidelity correlation, export."""
