"""The trusted side: the runtime a train.py imports, datasets, and the sandboxed runner.

Nothing here imports search, mutations, population or analysis: this package runs
inside the sandbox next to untrusted code and stays small.
"""
