"""The orchestrator: the `search` command line, the evolve loop (evolve.py) with its scheduler, knob studies,
children, combine step and executors."""
