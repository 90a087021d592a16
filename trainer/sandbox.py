"""Starting and ending sandboxed processes: an evaluation's training process and its scorer.

Each is `python -m trainer.launch ROLE DEVICE FD [VIEW]` (trainer/launch.py) in a fresh scratch
folder, with an environment built from an allow-list (API keys, cloud credentials and the data
cache location never reach it) and `HOME` pointed at the scratch folder. Where the machine allows
it the interpreter runs under `unshare` in its own namespaces and file-system view
(trainer/isolation.py); otherwise in its own session and process group: the process sandbox,
recorded as such in every result. It talks to the runner over its end (FD) of a socketpair;
what it prints goes to the scratch folder's start log until its run hands it the run's log.

Once handed a run, its whole process tree goes into a cgroup (trainer/cgroups.py) where the
machine has one: memory and process limits, CPU time measured from outside, one kill for all.
"""
from __future__ import annotations

import functools
import os
import re
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import psutil

import trainer
from trainer import isolation, protocol
from trainer.cgroups import RunGroup
from trainer.datasets import default_cache_dir

# Only these variables reach a sandboxed process; everything else (API keys, cloud credentials,
# the data cache location) stays with the driver.
_ALLOWED = re.compile(
    r"^(PATH|LANG|LANGUAGE|LC_[A-Z]+|TZ|TERM|LD_LIBRARY_PATH|CUDA_[A-Z_]+|NVIDIA_[A-Z_]+"
    r"|TORCHINDUCTOR_[A-Z_]+|TRITON_[A-Z_]+|OPENBLAS_[A-Z_]+|OMP_[A-Z_]+|MKL_[A-Z_]+|VIRTUAL_ENV)$"
)
_SECRET = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH|COOKIE|SESSION", re.IGNORECASE)
START_LOG = "log.txt"  # in the scratch folder: a child's output until its run hands it another log
MAX_PROCESSES = 1024   # per run (threads count): torch's pools, inductor's compile workers
_ADDRESS_SPACE_HEADROOM_MB = 1024  # torch maps ~0.6 GB of virtual memory it never touches
MAX_FILE_BYTES = 4 << 30  # largest file a run may write (its log, its scratch): a full disk stops everyone


def scrubbed_env(scratch: Path, threads: int, compile_cache: Path | None, keep_home: bool = False) -> dict[str, str]:
    """The child's whole environment; `keep_home` for compat scripts whose data lives under ~/.cache."""
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
    # Idle OpenMP threads sleep instead of spinning: the baseline on 2 cores beside one busy core
    # trained at 12.8k tokens/s instead of 6.4k, and its CPU time is then work, not waiting (the
    # runner charges CPU time, trainer/compute.py).
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if compile_cache is not None:
        # A cache per run: a shared one would let a variant plant compiled kernels in other runs.
        env.update(TORCHINDUCTOR_CACHE_DIR=str(compile_cache / "inductor"), TRITON_CACHE_DIR=str(compile_cache / "triton"))
    return env


@functools.cache
def isolation_level() -> str:
    """NAMESPACES where `unshare` works here, else PROCESS (said once, as a warning)."""
    if isolation.namespaces_available():
        return isolation.NAMESPACES
    warnings.warn("user, PID, mount and network namespaces are unavailable here (util-linux unshare failed): "
                  "variants run in the process sandbox, without the file-system, process and network "
                  "isolation; results record isolation=process", RuntimeWarning, stacklevel=2)
    return isolation.PROCESS


@dataclass
class Child:
    """One sandboxed interpreter: its process, scratch folder, socket and (once confined) cgroup."""

    role: str
    device: str
    process: subprocess.Popen  # `unshare` when isolated, else the interpreter itself
    scratch: Path
    sock: socket.socket        # the runner's end of the socketpair
    start_log: int             # a descriptor of its start log, opened before it ran: never reopened by path
    isolation: str
    group: RunGroup | None = None
    ready: bool = False
    _baseline_cpu: float = field(default=0.0, repr=False)

    @property
    def log_path(self) -> Path:
        return self.scratch / START_LOG

    def put(self, name: str, text: str) -> None:
        """Write a file into its scratch folder, never through a link it may have planted there."""
        fd = os.open(self.scratch / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "w") as file:
            file.write(text)

    def take_file(self, name: str) -> int | None:
        """A read-only descriptor of a regular file it wrote into its scratch folder (not through a link),
        or None: a file it hands over travels as a descriptor, never through the runner's memory."""
        try:
            fd = os.open(self.scratch / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return None
        return fd

    def alive(self) -> bool:
        """Still running, and its interpreter has not closed its end of the socket."""
        if self.process.poll() is not None:
            return False
        readable, _, _ = select.select([self.sock], [], [], 0)
        return not readable or self.sock.recv(1, socket.MSG_PEEK) != b""

    def wait_ready(self, timeout_s: float) -> bool:
        """Block until the interpreter has done its start-up and waits for its job (False if it died)."""
        if not self.ready:
            self.sock.settimeout(timeout_s)
            try:
                header, _, _ = protocol.recv(self.sock, max_payload=0)
                self.ready = header.get("type") == "ready"
            except (EOFError, OSError, protocol.ProtocolError):
                self.ready = False
            finally:
                self.sock.settimeout(None)
        return self.ready

    def tree(self) -> list[psutil.Process]:
        """The process and every descendant (inside the namespaces too), as seen from here."""
        try:
            root = psutil.Process(self.process.pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def confine(self, memory_mb: int) -> None:
        """Put the whole tree in a fresh cgroup with these limits, and cap the size of the files it writes;
        called before it runs any variant code. Without a cgroup, CPU runs get an address-space limit."""
        self.group = RunGroup.create(memory_mb, MAX_PROCESSES)
        for process in self.tree():
            try:
                if self.group is not None:
                    self.group.add(process.pid)
                process.rlimit(psutil.RLIMIT_FSIZE, (MAX_FILE_BYTES, MAX_FILE_BYTES))
                if self.group is None and self.device == "cpu":  # CUDA maps huge virtual ranges: never there
                    limit = (memory_mb + _ADDRESS_SPACE_HEADROOM_MB) << 20
                    process.rlimit(psutil.RLIMIT_AS, (limit, limit))
            except (psutil.Error, OSError):
                continue  # already gone: the runner reports how it ended
        self._baseline_cpu = self._tree_cpu_seconds()

    def cpu_seconds(self) -> float:
        """CPU time of the whole tree since it was confined (the cgroup counts from when it joined)."""
        if self.group is not None:
            return self.group.cpu_seconds()
        return self._tree_cpu_seconds() - self._baseline_cpu

    def memory_mb(self) -> float:
        if self.group is not None:
            return self.group.memory_mb()
        total = 0
        for process in self.tree():
            try:
                total += process.memory_info().rss
            except psutil.Error:
                continue
        return total / 2**20

    def _tree_cpu_seconds(self) -> float:
        total = 0.0
        for process in self.tree():
            try:
                times = process.cpu_times()
                total += times.user + times.system + times.children_user + times.children_system
            except psutil.Error:
                continue
        return total

    def kill(self) -> None:
        """SIGKILL everything it started: its cgroup, its PID namespace (through its first process), its
        process group, and any descendant that left the group."""
        stragglers = self.tree()
        if self.group is not None:
            self.group.kill()
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for process in stragglers:
            try:
                process.kill()
            except psutil.Error:
                continue

    def wait(self) -> int:
        """Its exit code, a negative signal number when it was killed (inside its namespaces too)."""
        code = self.process.wait()
        return isolation.exit_code(code) if self.isolation == isolation.NAMESPACES else code

    def discard(self) -> None:
        """Kill it (if it still runs) and remove everything it left; a second call does nothing."""
        if self.sock.fileno() == -1:
            return
        self.kill()
        self.process.wait()
        self.sock.close()
        os.close(self.start_log)
        if self.group is not None:
            self.group.remove()
        shutil.rmtree(self.scratch, ignore_errors=True)


def start_child(role: str, device: str, threads: int, *, files: dict[str, str] | None = None,
                keep_home: bool = False) -> Child:
    """Start a sandboxed interpreter of `role` (train, score or compat) that readies `device` and waits
    for its job on the socket; `files` are written into its scratch folder first."""
    scratch = Path(tempfile.mkdtemp(prefix="evotrain-"))
    for name, text in (files or {}).items():
        (scratch / name).write_text(text)
    level = isolation_level()
    env = scrubbed_env(scratch, threads, scratch / "compile", keep_home=keep_home)
    runner_end, child_end = socket.socketpair()
    command = [sys.executable, "-m", "trainer.launch", role, device, str(child_end.fileno())]
    if level == isolation.NAMESPACES:
        command = [*isolation.UNSHARE, *command, _view(scratch, device, keep_home).to_json()]
    try:
        with open(scratch / START_LOG, "wb") as log:
            start_log = os.open(scratch / START_LOG, os.O_RDONLY)
            process = subprocess.Popen(command, cwd=scratch, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT, pass_fds=(child_end.fileno(),),
                                       start_new_session=True)
    except BaseException:
        runner_end.close()
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    finally:
        child_end.close()
    return Child(role, device, process, scratch, runner_end, start_log, level)


def _view(scratch: Path, device: str, keep_home: bool) -> isolation.View:
    """Read-only code and this scratch folder; a compat script also reads ~/.cache (its own data),
    never evotrain's dataset cache."""
    cache = default_cache_dir().resolve()
    home_cache = Path.home() / ".cache"
    extra = (str(home_cache),) if keep_home and home_cache.is_dir() else ()
    view = isolation.view_for(scratch, Path(trainer.__file__).resolve().parent, device, hidden=(cache,))
    return isolation.View(view.read_only + extra, view.writable, view.devices, view.hidden)
