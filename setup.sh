#!/usr/bin/env bash
# Creates .venv with everything evotrain and its tests need. Idempotent: a second run
# only reinstalls when pyproject.toml changed. The CPU build of torch goes in first, so
# pip never pulls a multi-GB CUDA build; set EVOTRAIN_TORCH to pick another torch.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/search ] || [ pyproject.toml -nt .venv/.evotrain-installed ]; then
  python3 -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet "${EVOTRAIN_TORCH:-torch==2.13.0}"
  .venv/bin/python -m pip install --quiet -e ".[test]"
  touch .venv/.evotrain-installed
fi
