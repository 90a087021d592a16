"""Interpreters started ahead of their evaluation, so the next run on a slot skips start-up.

Importing torch and torch._dynamo (which torch.optim loads) and the first torch.export are about
3.5 s of every CPU evaluation before its first batch; on an H200, with the CUDA context and the
compiler, it was 11 s. `Spares` keeps, per kind of run (device, threads), one idle training
interpreter and one idle scorer that have done that work inside their own namespaces and wait on
their socket for a job. `run_variant` takes them instead of starting processes, and starts the
replacements after the run's first step (start-up and that step count as overhead and run alone),
so they are ready when the slot's next run comes.

An idle spare has run no variant code, so isolation is unchanged: one variant, one process tree,
one scratch folder, one set of namespaces. A spare that died while waiting is discarded and a
fresh process started.
"""
from __future__ import annotations

import atexit
import threading

from trainer.sandbox import Child, start_child

ROLES = ("train", "score")


class Spares:
    """At most one waiting interpreter per (role, device, threads); `close()` kills them all."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, str, int], Child] = {}
        self._lock = threading.Lock()
        self._closed = False
        atexit.register(self.close)  # a crashed driver leaves no idle interpreters behind

    def take(self, device: str, threads: int, role: str = "train") -> Child | None:
        """The waiting interpreter for this kind of run, if one is alive; the caller owns it."""
        with self._lock:
            child = self._idle.pop((role, device, threads), None)
        if child is not None and not child.alive():
            child.discard()
            return None
        return child

    def replenish(self, device: str, threads: int) -> None:
        """Start the spares this kind of run needs (a training interpreter and a scorer) unless they wait."""
        for role in ROLES:
            with self._lock:
                if self._closed or (role, device, threads) in self._idle:
                    continue
                try:
                    self._idle[role, device, threads] = start_child(role, device, threads)
                except OSError:
                    pass  # only a head start is lost; the next run starts its own process and reports what fails

    def wait_ready(self, device: str, threads: int, timeout_s: float) -> bool:
        """Block until this kind of run's spares have done their start-up (for measurements and tests)."""
        with self._lock:
            waiting = [self._idle.get((role, device, threads)) for role in ROLES]
        return all(child is not None and child.wait_ready(timeout_s) for child in waiting)

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
