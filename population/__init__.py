"""The population side of a search: the run store (store.py), paired fitness statistics (stats.py), parent
selection and population trimming (selection.py)."""
