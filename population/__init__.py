"""The store of variants and evaluations (store.py); fitness statistics and parent selection to come."""
