"""Interpreters started ahead of their evaluation, so the next run on a slot skips start-up.

Importing torch and torch._dynamo (which torch.optim loads) is about 2.5 s of every CPU
evaluation (4% of a 60 s budget) before its first batch; on an H200, with the CUDA context
and the compiler, it was 11 s. With a spare ready, 0.04 s on CPU and 0.4-0.6 s on the H200.
`Spares` keeps one idle trusted interpreter per kind of run (device, threads) that has done
that work and waits on stdin for its spec. `run_variant` takes it instead of starting a
process, and starts the replacement after the run's first step (start-up and that step count
as overhead and run alone), so it is ready when the slot's next run comes.

An idle spare has run no variant code, so isolation is unchanged: one variant, one process,
one scratch folder. A spare that died while waiting is discarded and a fresh process started.
"""
from __future__ import annotations

import atexit
import threading

from trainer.sandbox import Child, start_launcher


class Spares:
    """At most one waiting interpreter per (device, threads); `close()` kills them all."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], Child] = {}
        self._lock = threading.Lock()
        self._closed = False
        atexit.register(self.close)  # a crashed driver leaves no idle interpreters behind

    def take(self, device: str, threads: int) -> Child | None:
        """The waiting interpreter for this kind of run, if one is alive; the caller owns it."""
        with self._lock:
            child = self._idle.pop((device, threads), None)
        if child is not None and child.process.poll() is not None:
            child.discard()
            return None
        return child

    def replenish(self, device: str, threads: int) -> None:
        """Start a spare for this kind of run unless one already waits."""
        with self._lock:
            if self._closed or (device, threads) in self._idle:
                return
            try:
                self._idle[device, threads] = start_launcher(device, threads)
            except OSError:
                pass  # only a head start is lost; the next run starts its own process and reports what fails

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = list(self._idle.values()), {}
        for child in idle:
            child.discard()

    def __enter__(self) -> Spares:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
