"""One training run as the runtime sees it: budget accounting, batches, probes, finish.

The session keeps time and token counts itself; the script only asks whether to go on.
Any breach of the contract is sent to the runner at once, so a script that catches the
exception and carries on still gets the failing status.
"""
from __future__ import annotations

import math
import platform
import resource
import time
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch

from trainer.batches import TrainBatches
from trainer.budget import BudgetUnit
from trainer.datasets import PreparedDataset
from trainer.evaluation import RunFailure, bits_per_byte, find_leak, validation_rows
from trainer.result import Status
from trainer.spec import RunSpec

_MAX_MICRO_BATCHES = 1024      # batches between two step() calls before we call it a contract breach
_FINISH_GRACE_SECONDS = 10.0   # time allowed between the last step() and finish() ...
_FINISH_GRACE_FRACTION = 0.1   # ... or this share of the training time, whichever is larger
_PROGRESS_EVERY_SECONDS = 1.0
_LEAK_CHECK_ROWS = 2


class TrainingSession:
    def __init__(self, spec: RunSpec, channel, launched: float | None = None) -> None:
        self._launched = time.perf_counter() if launched is None else launched
        self.spec = spec
        self._channel = channel
        self.device = torch.device(spec.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RunFailure(Status.INVALID, f"device {spec.device} requested but CUDA is not available")
        self.dtype = getattr(torch, spec.profile.dtype)
        self.seed = spec.seed
        self.seq_len = spec.profile.seq_len
        self.budget = spec.budget
        if spec.threads:
            torch.set_num_threads(spec.threads)
        torch.manual_seed(spec.seed)
        np.random.seed(spec.seed)

        dataset = PreparedDataset.load(spec.dataset_root)
        self.vocab_size = dataset.vocab_size
        self._token_bytes = torch.from_numpy(np.asarray(dataset.token_bytes(), dtype=np.int64))
        self._batches = TrainBatches(dataset.tokens("train"), self.seq_len, spec.seed, self.device)
        self._eval_inputs, self._eval_targets = validation_rows(
            dataset.tokens(spec.split), self.seq_len, spec.profile.eval_tokens
        )

        self._tokens = 0
        self._timed_tokens = 0       # tokens of steps whose time counts (warm-up steps excluded)
        self._step_tokens = 0
        self._steps = 0
        self._micro_batches = 0
        self._training_seconds = 0.0
        self._started: float | None = None  # first batch: start-up ends here
        self._mark = 0.0             # end of the last accounted interval
        self._last_progress_event = 0.0
        self._last_loss: float | None = None
        self._pending_probes = sorted(spec.probes)
        self._curve: list[dict] = []
        self._failed = False
        self._finished = False
        self._send("start", device=str(self.device), dtype=spec.profile.dtype, torch=torch.__version__,
                   python=platform.python_version(), vocab_size=self.vocab_size, seq_len=self.seq_len,
                   threads=torch.get_num_threads(), eval_tokens=int(self._eval_targets.numel()))

    # ---------------------------------------------------------------- the contract
    def progress(self) -> float:
        """Fraction of the budget spent, for schedules that scale with the budget."""
        if self.budget.unit is BudgetUnit.TOKENS:
            return self._tokens / self.budget.amount
        return self._training_seconds / self.budget.amount

    def keep_training(self) -> bool:
        self._check_open()
        return self.progress() < 1.0

    def next_batch(self, batch_size: int, seq_len: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_open()
        seq_len = self.seq_len if seq_len is None else seq_len
        if not (isinstance(batch_size, int) and batch_size > 0 and isinstance(seq_len, int) and 0 < seq_len <= self.seq_len):
            self._fail(Status.INVALID, f"next_batch needs batch_size > 0 and 0 < seq_len <= {self.seq_len}, "
                                       f"but got {batch_size=}, {seq_len=}")
        if self._micro_batches == 0 and self.progress() >= 1.0:
            self._fail(Status.OVER_BUDGET, f"a new step started after the {self.budget} budget was spent; "
                                           "ask runtime.keep_training() before each step")
        self._micro_batches += 1
        if self._micro_batches > _MAX_MICRO_BATCHES:
            self._fail(Status.INVALID, "call runtime.step(model, loss) once per optimizer step")
        if self._started is None:
            self._started = self._mark = time.perf_counter()
        tokens = batch_size * seq_len
        self._tokens += tokens
        self._step_tokens += tokens
        return self._batches.next(batch_size, seq_len)

    def step(self, model: torch.nn.Module, loss: torch.Tensor | float) -> None:
        self._check_open()
        if self._micro_batches == 0:
            self._fail(Status.INVALID, "runtime.step() was called without a runtime.next_batch() before it")
        value = float(loss.detach().float().item() if isinstance(loss, torch.Tensor) else loss)
        self._sync()
        now = time.perf_counter()
        self._steps += 1
        if self._steps > self.spec.profile.warmup_steps:
            self._training_seconds += now - self._mark
            self._timed_tokens += self._step_tokens
        self._mark = now
        self._micro_batches = 0
        self._step_tokens = 0
        if not math.isfinite(value):
            self._fail(Status.NAN, f"training loss became {value} at step {self._steps}")
        self._last_loss = value
        if self._pending_probes and self.progress() >= self._pending_probes[0]:
            self._probe(model)
        elif now - self._last_progress_event >= _PROGRESS_EVERY_SECONDS:
            self._send("progress", **self._counters(), train_loss=value)
            self._last_progress_event = now

    def finish(self, model: torch.nn.Module) -> None:
        self._check_open()
        gap = time.perf_counter() - self._mark
        grace = max(_FINISH_GRACE_SECONDS, _FINISH_GRACE_FRACTION * self._training_seconds)
        if self._steps and gap > grace:
            self._fail(Status.OVER_BUDGET, f"{gap:.1f}s passed between the last runtime.step() and finish() "
                                           f"(allowed {grace:.1f}s): work after training is not measured")
        self._finished = True
        finish_started = time.perf_counter()
        model.eval()
        try:
            leak = find_leak(model, self._eval_inputs[:_LEAK_CHECK_ROWS], self.vocab_size, self.autocast(),
                             self.device, relative_tolerance=1e-4 if self.dtype == torch.float32 else 1e-2)
            if leak:
                self._send("result", status=Status.LEAK.value, message=leak, **self._metrics(model, finish_started))
                return
            val_bpb = self._bpb(model, self._eval_inputs, self._eval_targets)
        except RunFailure as failure:
            self._failed = True
            self._send("error", status=failure.status.value, message=str(failure))
            raise
        status, message = (Status.OK, "") if math.isfinite(val_bpb) else (Status.NAN, f"validation loss is {val_bpb}")
        self._send("result", status=status.value, message=message,
                   val_bpb=val_bpb if math.isfinite(val_bpb) else None, **self._metrics(model, finish_started))

    def autocast(self) -> AbstractContextManager:
        if self.dtype == torch.float32:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    @property
    def finished(self) -> bool:
        return self._finished or self._failed

    # ---------------------------------------------------------------- internals
    def _probe(self, model: torch.nn.Module) -> None:
        rows = self.spec.profile.probe_rows
        was_training = model.training
        model.eval()
        try:
            val_bpb = self._bpb(model, self._eval_inputs[:rows], self._eval_targets[:rows])
        except RunFailure as failure:
            self._fail(failure.status, str(failure))
        model.train(was_training)
        while self._pending_probes and self.progress() >= self._pending_probes[0]:
            self._pending_probes.pop(0)
        point = {**self._counters(), "val_bpb": val_bpb, "train_loss": self._last_loss}
        self._curve.append(point)
        self._send("probe", **point)
        self._mark = time.perf_counter()  # evaluation time is not training time

    def _bpb(self, model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float:
        return bits_per_byte(model, inputs, targets, self._token_bytes, self.spec.profile.eval_batch_rows,
                             self.autocast(), self.device)

    def _counters(self) -> dict:
        return {"progress": round(min(self.progress(), 1.0), 4), "step": self._steps, "tokens": self._tokens,
                "seconds": round(self._training_seconds, 3)}

    def _metrics(self, model: torch.nn.Module, finish_started: float) -> dict:
        started = self._started if self._started is not None else finish_started
        return {
            "startup_seconds": started - self._launched,  # interpreter, imports, data, model, first batch
            "eval_seconds": time.perf_counter() - finish_started,  # leak check and validation
            "steps": self._steps,
            "tokens": self._tokens,
            "training_seconds": self._training_seconds,
            "tokens_per_second": self._timed_tokens / self._training_seconds if self._training_seconds else 0.0,
            "peak_memory_mb": self._peak_memory_mb(),
            "curve": self._curve,
            "parameters": sum(p.numel() for p in model.parameters()),
        }

    def _peak_memory_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _check_open(self) -> None:
        if self._failed:
            raise RunFailure(Status.INVALID, "the runtime already stopped this run")
        if self._finished:
            self._fail(Status.INVALID, "the runtime was used after finish(model)")

    def _fail(self, status: Status, message: str) -> None:
        self._failed = True
        self._send("error", status=status.value, message=message)
        raise RunFailure(status, message)

    def _send(self, event: str, **fields) -> None:
        self._channel.send({"event": event, **fields})
