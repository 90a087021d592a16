"""Watching a sandboxed process from the runner: its frames, its deadline, its memory, a stop.

`converse` reads a child's frames and hands each to the caller until the caller is done, the
child ends, or the `Watch` ends it: past the deadline (timeout), over the memory limit (oom:
the cgroup's, or resident memory where there is none), or stopped by the caller (pruned). A
child that sends something that is not a frame, or stalls in the middle of one, broke the
contract. `exit_status` names how a child ended that never said.
"""
from __future__ import annotations

import contextlib
import os
import select
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from trainer import protocol
from trainer.result import Status
from trainer.sandbox import Child

_POLL_SECONDS = 0.2
_SEND_TIMEOUT_SECONDS = 30.0  # a child that reads none of its answers for this long has stalled
_EXIT_PATIENCE_SECONDS = 5.0  # for a process whose socket closed to finish exiting
_LOG_TAIL_LINES = 40
_LOG_TAIL_CHARS = 4000

Handler = Callable[[dict, bytes], bool]  # True: the conversation is over


@dataclass
class Watch:
    """The limits of one evaluation, and why it was ended if it was."""

    deadline: float          # time.perf_counter() value
    timeout_s: float
    memory_mb: int
    stop: threading.Event | None = None
    killed_for: Status | None = None
    message: str = ""
    peak_rss_mb: float = 0.0
    pruned: threading.Event = field(default_factory=threading.Event)  # set by the caller's on_event

    @classmethod
    def starting_now(cls, timeout_s: float, memory_mb: int, stop: threading.Event | None) -> Watch:
        return cls(time.perf_counter() + timeout_s, timeout_s, memory_mb, stop)

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.perf_counter())

    def elapsed(self) -> float:
        return self.timeout_s - (self.deadline - time.perf_counter())

    def check(self, child: Child) -> bool:
        """True (with the reason kept) when the child must be ended now."""
        if self.killed_for is None:
            rss = child.memory_mb()
            self.peak_rss_mb = max(self.peak_rss_mb, rss)
            if child.group is None and rss > self.memory_mb:
                self.end(Status.OOM, f"resident memory reached {rss:.0f} MB, over the {self.memory_mb} MB limit")
            elif time.perf_counter() > self.deadline:
                self.end(Status.TIMEOUT, f"still running at the {self.timeout_s:.0f}s deadline; killed")
            elif self.pruned.is_set():
                self.end(Status.PRUNED, "stopped early by the scheduler")
            elif self.stop is not None and self.stop.is_set():
                self.end(Status.PRUNED, "stopped by the search")
        return self.killed_for is not None

    def end(self, status: Status, message: str) -> None:
        if self.killed_for is None:
            self.killed_for, self.message = status, message


def converse(child: Child, watch: Watch, handle: Handler, max_payload: int) -> None:
    """Pass the child's frames to `handle` until it returns True, the child ends, or `watch` ends it."""
    try:
        while not watch.check(child):
            readable, _, _ = select.select([child.sock], [], [], _POLL_SECONDS)
            if not readable:
                if child.process.poll() is not None:
                    return  # ended, and whatever still holds its socket open says nothing more
                continue
            child.sock.settimeout(max(watch.remaining(), 0.01))
            try:
                header, payload, _ = protocol.recv(child.sock, max_payload)
            except (EOFError, ConnectionError):
                return
            except (protocol.ProtocolError, socket.timeout) as error:
                watch.end(Status.INVALID, f"the sandboxed process broke the runtime's protocol: {error}")
                return
            finally:
                child.sock.settimeout(None)
            if handle(header, payload):
                return
    finally:  # also when the runner itself is interrupted (Ctrl-C, a cancelled Ray task)
        if watch.killed_for is not None:
            child.kill()


def finish(child: Child, watch: Watch, patience_s: float = _EXIT_PATIENCE_SECONDS) -> int:
    """End the child and return its exit code: after the conversation closed by itself, it gets a moment
    to exit on its own (how it ends is the verdict when it said nothing); killed at once otherwise."""
    if watch.killed_for is None:
        try:
            child.process.wait(timeout=max(0.0, min(patience_s, watch.remaining())))
        except subprocess.TimeoutExpired:
            pass
    child.kill()
    return child.wait()


def reply(child: Child, watch: Watch, header: dict, payload: bytes = b"", fds: Sequence[int] = ()) -> bool:
    """Send the child a frame; False when it died or stopped reading its answers (within the deadline)."""
    child.sock.settimeout(max(0.01, min(_SEND_TIMEOUT_SECONDS, watch.remaining())))
    try:
        protocol.send(child.sock, header, payload, fds)
        return True
    except OSError:  # socket.timeout included
        return False
    finally:
        child.sock.settimeout(None)


def exit_status(returncode: int | None, oom_killed: bool, log_tail: str) -> tuple[Status, str]:
    """How a child ended when it said nothing about it."""
    if oom_killed:
        return Status.OOM, "killed by the kernel at the run's memory limit"
    if returncode is not None and returncode < 0:
        if returncode == -9:  # not ours: the kernel's OOM killer is the usual sender
            return Status.OOM, "killed by SIGKILL, most likely the system ran out of memory"
        return Status.CRASH, f"killed by signal {-returncode}"
    last_line = next((line for line in reversed(log_tail.splitlines()) if line.strip()), "")
    if returncode == 0:
        return Status.INVALID, "the script ended without calling runtime.finish(model)"
    return Status.CRASH, f"exited with code {returncode}: {last_line}"[:300]


@contextlib.contextmanager
def run_log(log_path: Path | None) -> Iterator[int]:
    """The run's log (a temporary one when the caller keeps none) and a descriptor to append to it,
    which the sandboxed processes receive and the runner reads the tail through (in the process
    sandbox a variant could swap the path for a link); a bad path fails here, in the caller."""
    with contextlib.ExitStack() as stack:
        if log_path is None:
            log_path = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="evotrain-log-"))) / "log.txt"
        log_path.write_bytes(b"")
        fd = os.open(log_path, os.O_RDWR | os.O_APPEND)
        stack.callback(os.close, fd)
        yield fd


def tail(fd: int) -> str:
    """The last lines of a log, read through a descriptor the runner opened (a variant can swap a path
    in its scratch folder, or in the process sandbox anywhere, for a link) from its end (a variant
    decides how long its log is)."""
    try:
        size = os.fstat(fd).st_size
        text = os.pread(fd, _LOG_TAIL_CHARS * 4, max(0, size - _LOG_TAIL_CHARS * 4))
    except OSError:
        return ""
    return "\n".join(text.decode("utf-8", errors="replace").splitlines()[-_LOG_TAIL_LINES:])[-_LOG_TAIL_CHARS:]
