"""The runner's side of a training run: it serves the data, counts it, keeps the clock and the budget.

It lives in the runner's process, outside the sandbox, and answers the training process's requests:

- `begin` (runtime.keep_training): may a new step start? Not once the budget is spent.
- `batch`: the next training windows for the seed (trainer/batches.py). Their tokens are counted
  here, so a variant cannot take more data than its budget: once the budget is spent a batch
  for a step that was not begun in time is refused, and a step begun in time may take at most as
  many batches as its largest earlier step (FIRST_STEP_BATCHES for the first).
- `step`: closes a step; its loss must be finite. The answer carries the probe rows when a probe
  is due: held-out training rows, never validation ones.
- `probe`: the probe's bits per byte, computed in the sandbox, so advisory (early stopping only).

The clock is the runner's too: the first `warmup_steps` steps (up to WARMUP_SECONDS in all, so
a variant cannot train for free in an endless first step) and every probe are left out of the
training seconds a wall-clock budget counts. A FLOP budget charges each served token three
times the forward FLOPs per token that the runtime declares at the first step; the scorer counts
them itself on the exported model, and a run that declared less than that is over budget.
A breach is kept as `failure` and refused; the runner ends the run there.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from trainer.batches import TrainBatches, probe_rows
from trainer.budget import BudgetUnit
from trainer.protocol import reported_number
from trainer.result import Status
from trainer.spec import RunSpec

MAX_STEP_BATCHES = 1024      # batches between two step() calls before it is a contract breach
FIRST_STEP_BATCHES = 64      # batches the first step may take past the end of the budget
_FINISH_GRACE_SECONDS = 10.0  # time allowed between the last step and the model's arrival ...
_FINISH_GRACE_FRACTION = 0.1  # ... or this share of the training time, whichever is larger
_PROGRESS_EVERY_SECONDS = 1.0
WARMUP_SECONDS = 60.0  # untimed warm-up at most: a cold torch.compile of the first step took 20 s on an H200
TRAINING_FLOPS_PER_FORWARD = 3  # forward and backward (Kaplan et al. 2020)

Emit = Callable[[dict], None]


class BatchServer:
    def __init__(self, spec: RunSpec, train_tokens: np.ndarray, emit: Emit,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        profile = spec.profile
        self.budget = spec.budget
        self._warmup_steps = profile.warmup_steps
        self._probe_rows = probe_rows(train_tokens, profile.seq_len, profile.probe_rows)
        self._batches = TrainBatches(train_tokens, profile.seq_len, spec.seed, held_out=self._probe_rows.size)
        self._max_seq_len = profile.seq_len
        self._emit = emit
        self._clock = clock
        self._pending_probes = sorted(spec.probes)
        self.failure: tuple[Status, str] | None = None
        self.tokens = self.timed_tokens = self.batches = self.steps = 0
        self.training_seconds = 0.0
        self._warmup_seconds = 0.0
        self.first_batch_at: float | None = None
        self.declared_flops: float | None = None  # forward FLOPs per token the runtime declares at the first step
        self._mark = 0.0              # end of the last accounted interval
        self._step_open = False
        self._step_batches = self._step_tokens = 0
        self._largest_step = 0
        self._probe_asked = False
        self._last_loss: float | None = None
        self._last_progress_event = -math.inf

    # ---------------------------------------------------------------- the budget
    def progress(self) -> float:
        if self.budget.unit is BudgetUnit.TOKENS:
            return self.tokens / self.budget.amount
        if self.budget.unit is BudgetUnit.FLOPS:
            return self.tokens * TRAINING_FLOPS_PER_FORWARD * (self.declared_flops or 0.0) / self.budget.amount
        return self.training_seconds / self.budget.amount

    def counters(self) -> dict:
        return {"progress": round(min(self.progress(), 1.0), 4), "step": self.steps, "tokens": self.tokens,
                "seconds": round(self.training_seconds, 3)}

    def since_last_step(self) -> float:
        """Seconds since the last step (or probe) closed: at the model's arrival, its export and handover."""
        return self._clock() - self._mark

    def finish_gap(self) -> str | None:
        """Why the model came too late after the last step (work after training is not measured), or None."""
        gap = self.since_last_step()
        grace = max(_FINISH_GRACE_SECONDS, _FINISH_GRACE_FRACTION * self.training_seconds)
        if self.steps and gap > grace:
            return (f"{gap:.1f}s passed between the last runtime.step() and finish() (allowed {grace:.1f}s): "
                    "work after training is not measured")
        return None

    # ---------------------------------------------------------------- requests
    def handle(self, request: dict) -> tuple[dict, bytes]:
        """The answer to one request of the training process ({"refused": True, ...} after a breach)."""
        kind = request.get("type")
        if self._probe_asked and kind != "probe":  # probe time is untimed: no training in it
            return self._refuse(Status.INVALID, f"the runtime sent {str(kind)[:40]!r} before the probe's result")
        if kind == "begin":
            return self._begin()
        if kind == "batch":
            return self._batch(request.get("rows"), request.get("seq_len"))
        if kind == "step":
            return self._step(request.get("loss"), request.get("flops_per_token"))
        if kind == "probe":
            return self._probe(request.get("val_bpb"))
        return self._refuse(Status.INVALID, f"the runtime sent an unknown request {str(kind)[:40]!r}")

    def _begin(self) -> tuple[dict, bytes]:
        if self.budget.unit is BudgetUnit.FLOPS and self.steps and self.declared_flops is None:
            return self._refuse(Status.INVALID, "a FLOP budget needs the model's FLOPs per token at the first "
                                                "runtime.step(model, loss); pass the model being trained")
        go = self.progress() < 1.0
        self._step_open = self._step_open or go
        return self._answer(go=go), b""

    def _batch(self, rows: object, seq_len: object) -> tuple[dict, bytes]:
        if not (isinstance(rows, int) and rows > 0 and isinstance(seq_len, int) and 0 < seq_len <= self._max_seq_len):
            return self._refuse(Status.INVALID, f"next_batch needs batch_size > 0 and 0 < seq_len <= "
                                                f"{self._max_seq_len}, but got {rows=}, {seq_len=}")
        spent = self.progress() >= 1.0
        if spent and not self._step_open:
            return self._refuse(Status.OVER_BUDGET, f"a new step started after the {self.budget} budget was spent; "
                                                    "ask runtime.keep_training() before each step")
        if spent and self._step_batches >= max(self._largest_step, FIRST_STEP_BATCHES if not self.steps else 0):
            return self._refuse(Status.OVER_BUDGET, f"the last step kept taking batches after the {self.budget} "
                                                    "budget was spent (more than any earlier step)")
        if self._step_batches >= MAX_STEP_BATCHES:
            return self._refuse(Status.INVALID, "call runtime.step(model, loss) once per optimizer step")
        if self.first_batch_at is None:
            self.first_batch_at = self._mark = self._clock()
        self._step_open = True
        self._step_batches += 1
        self.batches += 1
        self.tokens += rows * seq_len
        self._step_tokens += rows * seq_len
        window = self._batches.next(rows, seq_len)
        return self._answer(dtype=window.dtype.str, shape=list(window.shape)), window.tobytes()

    def _step(self, loss: object, flops_per_token: object) -> tuple[dict, bytes]:
        if self._step_batches == 0:
            return self._refuse(Status.INVALID, "runtime.step() was called without a runtime.next_batch() before it")
        now = self._clock()
        self.steps += 1
        if self.steps > self._warmup_steps:
            self.training_seconds += now - self._mark
            self.timed_tokens += self._step_tokens
        else:
            untimed = min(now - self._mark, WARMUP_SECONDS - self._warmup_seconds)
            self._warmup_seconds += untimed
            self.training_seconds += now - self._mark - untimed
        self._mark = now
        self._largest_step = max(self._largest_step, self._step_batches)
        self._step_open = False
        self._step_batches = self._step_tokens = 0
        if self.steps == 1 and isinstance(flops_per_token, (int, float)) and flops_per_token > 0:
            self.declared_flops = float(flops_per_token)
        value = _reported(loss)
        if not math.isfinite(value):
            return self._refuse(Status.NAN, f"training loss became {loss} at step {self.steps}")
        if self._pending_probes and self.progress() >= self._pending_probes[0]:
            while self._pending_probes and self.progress() >= self._pending_probes[0]:
                self._pending_probes.pop(0)
            self._probe_asked = True
            self._last_loss = value
            return self._answer(probe=True, dtype=self._probe_rows.dtype.str,
                                shape=list(self._probe_rows.shape)), self._probe_rows.tobytes()
        if now - self._last_progress_event >= _PROGRESS_EVERY_SECONDS:
            self._emit({"event": "progress", **self.counters(), "train_loss": value})
            self._last_progress_event = now
        return self._answer(), b""

    def _probe(self, value: object) -> tuple[dict, bytes]:
        if not self._probe_asked:
            return self._refuse(Status.INVALID, "the runtime sent a probe result nobody asked for")
        self._probe_asked = False
        self._mark = self._clock()  # evaluation time is not training time
        self._emit({"event": "probe", **self.counters(), "val_bpb": _reported(value),
                    "train_loss": self._last_loss})
        return self._answer(), b""

    def _answer(self, **fields) -> dict:
        return {"progress": self.progress(), **fields}

    def _refuse(self, status: Status, message: str) -> tuple[dict, bytes]:
        self.failure = self.failure or (status, message)
        return {"refused": True, "status": status.value, "message": message}, b""



def _reported(value: object) -> float:
    number = reported_number(value)
    return math.nan if number is None else number
