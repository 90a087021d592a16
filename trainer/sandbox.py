"""Process isolation for untrusted variants: a scrubbed environment and process-group control."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil

import trainer
from trainer.datasets import default_cache_dir

# Only these variables reach a variant; everything else (API keys, cloud credentials,
# the data cache location) stays with the driver.
_ALLOWED = re.compile(
    r"^(PATH|LANG|LANGUAGE|LC_[A-Z]+|TZ|TERM|LD_LIBRARY_PATH|CUDA_[A-Z_]+|NVIDIA_[A-Z_]+"
    r"|TORCHINDUCTOR_[A-Z_]+|TRITON_[A-Z_]+|OPENBLAS_[A-Z_]+|OMP_[A-Z_]+|MKL_[A-Z_]+|VIRTUAL_ENV)$"
)
_SECRET = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH|COOKIE|SESSION", re.IGNORECASE)


def scrubbed_env(scratch: Path, threads: int, compile_cache: Path | None, keep_home: bool = False) -> dict[str, str]:
    """The variant's whole environment; `keep_home` for compat scripts whose data lives under ~/.cache."""
    env = {k: v for k, v in os.environ.items() if _ALLOWED.match(k) and not _SECRET.search(k)}
    tmp = scratch / "tmp"
    tmp.mkdir(exist_ok=True)
    env.update(
        HOME=os.environ.get("HOME", str(scratch)) if keep_home else str(scratch),
        TMPDIR=str(tmp),
        PYTHONPATH=str(Path(trainer.__file__).resolve().parent.parent),  # the trusted runtime, nothing else
        PYTHONHASHSEED="0",
        PYTHONUNBUFFERED="1",
        PYTHONDONTWRITEBYTECODE="1",
    )
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    if compile_cache is not None:
        # Sharing the compile caches between evaluations halves the first compiled step (DESIGN.md).
        env.setdefault("TORCHINDUCTOR_CACHE_DIR", str(compile_cache / "inductor"))
        env.setdefault("TRITON_CACHE_DIR", str(compile_cache / "triton"))
    return env


def limit_address_space(pid: int, megabytes: int) -> None:
    """Hard memory ceiling for CPU runs; CUDA maps huge virtual ranges, so never use it there."""
    limit = megabytes * 2**20
    try:
        psutil.Process(pid).rlimit(psutil.RLIMIT_AS, (limit, limit))
    except psutil.Error:
        pass  # already gone: the runner reports how it ended


def group_rss_mb(process: subprocess.Popen) -> float:
    """Resident memory of the child and everything it started."""
    try:
        root = psutil.Process(process.pid)
        members = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0
    for member in members:
        try:
            total += member.memory_info().rss
        except psutil.Error:
            continue
    return total / 2**20


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the child's process group and any descendant that left it."""
    try:
        stragglers = psutil.Process(process.pid).children(recursive=True)
    except psutil.Error:
        stragglers = []
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for child in stragglers:
        try:
            child.kill()
        except psutil.Error:
            continue


START_LOG = "log.txt"  # in the scratch folder: a child's output until its run names another log


@dataclass
class Child:
    """One sandboxed interpreter: its process group, scratch folder, log and result channel."""

    process: subprocess.Popen
    scratch: Path
    log_path: Path  # where its stdout and stderr go
    read_end: int   # the runner's side of the result channel
    write_end: int  # the channel's descriptor number inside the child (already closed here)

    def claim_channel(self) -> int:
        """The read end, now owned (and closed) by the caller's reader."""
        fd, self.read_end = self.read_end, -1
        return fd

    def discard(self) -> None:
        """Kill it (if it still runs) and remove everything it left."""
        kill_group(self.process)
        self.process.wait()
        if self.process.stdin:
            self.process.stdin.close()
        if self.read_end >= 0:
            os.close(self.read_end)
        shutil.rmtree(self.scratch, ignore_errors=True)


def start_launcher(device: str, threads: int) -> Child:
    """The trusted entry point, trainer.launch: it sets up `device` (imports, CUDA context), then waits
    for its spec; train.py is written into its scratch folder before the spec is sent."""
    return start_child([sys.executable, "-m", "trainer.launch", "train.py", device], threads)


def start_child(command: list[str], threads: int, keep_home: bool = False, files: Mapping[str, str] | None = None,
                log_path: Path | None = None) -> Child:
    """Start `command` in a fresh scratch folder holding `files`, in its own process group, with a
    scrubbed environment, stdout and stderr to `log_path` (default: the folder's START_LOG) and a
    pipe for results."""
    scratch = Path(tempfile.mkdtemp(prefix="evotrain-"))
    log_path = log_path or scratch / START_LOG
    for name, text in (files or {}).items():
        (scratch / name).write_text(text)
    env = scrubbed_env(scratch, threads, default_cache_dir() / "compile", keep_home=keep_home)
    read_end, write_end = os.pipe()
    try:
        with open(log_path, "wb") as log:
            process = subprocess.Popen(command, cwd=scratch, env=env, stdin=subprocess.PIPE, stdout=log,
                                       stderr=subprocess.STDOUT, pass_fds=(write_end,), start_new_session=True)
    except BaseException:
        os.close(read_end)
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    finally:
        os.close(write_end)
    return Child(process, scratch, log_path, read_end, write_end)
