"""The runtime a train.py imports: `from trainer import runtime`.

The contract, in full:

    model = GPT(vocab_size=runtime.vocab_size, seq_len=runtime.seq_len).to(runtime.device)
    while runtime.keep_training():                 # False once the budget is spent
        x, y = runtime.next_batch(BATCH_SIZE)      # deterministic for runtime.seed
        lr = schedule(runtime.progress())          # fraction of the budget spent, 0..1
        with runtime.autocast():
            loss = loss_fn(model(x), y)
        ...backward, optimizer step...
        runtime.step(model, loss)                  # one call per optimizer step
    runtime.finish(model)                          # model(idx) -> logits (batch, time, vocab)

Values: `device`, `dtype` (autocast dtype), `seed`, `seq_len` (validation context; training
rows may be shorter), `vocab_size`, `budget`. The runner, outside the sandbox, serves the
batches, counts tokens and training time (warm-up steps excluded from a wall-clock budget) and
says when to stop; `finish` hands the model over, and a trusted scorer that never runs the
script's code checks causality and scores val_bpb. The script never reports its own score.

Under `search run` the launcher installs the session; run by hand (`python train.py`), the
script hands itself to the sandboxed runner (budget, seed, device and dataset from
EVOTRAIN_BUDGET, EVOTRAIN_SEED, EVOTRAIN_DEVICE, EVOTRAIN_DATASET), prints the result and exits.
"""
from __future__ import annotations

import os
from contextlib import AbstractContextManager
from typing import Any, TypeVar

import torch

from trainer.session import TrainingSession

_VALUES = ("device", "dtype", "seed", "seq_len", "vocab_size", "budget")
_session: TrainingSession | None = None
T = TypeVar("T")


def _install(session: TrainingSession) -> None:
    global _session
    _session = session


def _current() -> TrainingSession:
    if _session is None:
        _run_standalone()
    return _session


def _run_standalone() -> None:
    """`python train.py` by hand: evaluate this very script under the runner, print the result, exit."""
    import json
    import sys

    from pathlib import Path

    from trainer.program import Program
    from trainer.runner import build_spec, default_timeout, run_variant

    script = getattr(sys.modules.get("__main__"), "__file__", None)
    if script is None:
        raise SystemExit("evotrain: run the script from a file (python train.py), or through `search run`")
    spec = build_spec(budget=os.environ.get("EVOTRAIN_BUDGET", "200k"), seed=int(os.environ.get("EVOTRAIN_SEED", "0")),
                      device=os.environ.get("EVOTRAIN_DEVICE", "auto"),
                      dataset=os.environ.get("EVOTRAIN_DATASET", "shakespeare"))
    result = run_variant(Program.load(Path(script)).text, spec, timeout_s=default_timeout(spec.budget))
    shown = {k: v for k, v in result.to_dict().items() if k not in ("curve", "log_tail", "extra")}
    print(f"[evotrain result] {json.dumps(shown)}", file=sys.stderr)
    if not result.status.is_ok():
        print(result.log_tail, file=sys.stderr)
    raise SystemExit(0 if result.status.is_ok() else 1)


def __getattr__(name: str) -> Any:
    if name in _VALUES:
        return getattr(_current(), name)
    raise AttributeError(f"trainer.runtime has no attribute {name!r}")


def keep_training() -> bool:
    """True while budget is left; ask before every step."""
    return _current().keep_training()


def next_batch(batch_size: int, seq_len: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets, each (batch_size, seq_len) on the device; counts the tokens."""
    return _current().next_batch(batch_size, seq_len)


def progress() -> float:
    """Fraction of the budget spent so far (tokens or training seconds)."""
    return _current().progress()


def step(model: torch.nn.Module, loss: torch.Tensor | float) -> None:
    """Marks the end of one optimizer step; checks the loss is finite and runs due probes."""
    _current().step(model, loss)


def finish(model: torch.nn.Module) -> None:
    """Scores the model on the fixed validation bytes after a causality check."""
    _current().finish(model)


def autocast() -> AbstractContextManager:
    """The mixed-precision context for this device (bf16 on CUDA, nothing on CPU)."""
    return _current().autocast()


def pick(*, cpu: T, cuda: T) -> T:
    """One value per kind of device, so one file is sized for 2 CPU cores and for a GPU."""
    return cuda if _current().device.type == "cuda" else cpu
