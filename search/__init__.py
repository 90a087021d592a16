"""The orchestrator: the `search` command line, and (to come) the evolve loop and its executors."""
