"""The store of variants and evaluations, fitness statistics, parent selection."""
