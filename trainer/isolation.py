"""Operating-system isolation of a sandboxed process: its own user, PID, mount, network and IPC
namespaces, and a file-system view of read-only code and a private scratch folder.

The runner starts every sandboxed interpreter (the training process, the scorer, their spares)
under util-linux `unshare` (Python gains os.unshare only in 3.12), which works for root and
unprivileged users alike. The interpreter, still trusted (no variant code has run), then calls
`enter(view)` first thing:

- a tmpfs becomes the new root, holding only bind mounts of what a run needs, read-only, at the
  same paths: the system libraries, the Python installation and its packages, evotrain's own
  trainer/ package; the scratch folder read-write; fresh /proc (its own processes only), /tmp,
  /dev/shm and a few /dev nodes (plus the GPU's on CUDA). No home, no dataset cache, no run
  folder, no other checkout: nothing of the host that is not listed;
- pivot_root to it, detaching the old root entirely;
- every capability dropped (bounding set included) and no_new_privs set, so the variant cannot
  mount, remount the binds writable, or gain privileges through a setuid program.

The new network namespace has no interface up (no network), the PID namespace shows only the run's
own processes (no ancestor's /proc/PID/environ, where an API key would be), and when its first
process dies the kernel kills every other process in it: nothing a variant starts outlives it.
Where namespaces are unavailable (macOS, locked-down containers) `namespaces_available()` says so
and the runner falls back to the process sandbox (trainer/sandbox.py), noting it in each result.
"""
from __future__ import annotations

import ctypes
import functools
import json
import os
import platform
import select
import shutil
import signal
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

NAMESPACES = "namespaces"
PROCESS = "process"  # the fallback: process group, scrubbed environment, limits

UNSHARE = ("unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount", "--net", "--ipc", "--kill-child")
_DEV_NODES = ("null", "zero", "full", "random", "urandom")
_ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "passwd", "group", "nsswitch.conf")
_SYSTEM_DIRS = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/opt/conda")
_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "arm64": 41}  # syscall numbers (no libc wrapper)

# mount(2) flags and prctl(2) options
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 32, 4096, 16384, 1 << 18
_MNT_DETACH = 2
_PR_CAPBSET_DROP, _PR_SET_NO_NEW_PRIVS = 24, 38
_CAPABILITY_VERSION_3 = 0x20080522


@dataclass(frozen=True)
class View:
    """What a sandboxed process sees of the host's file system."""

    read_only: tuple[str, ...]           # bound at the same path, read-only
    writable: tuple[str, ...]            # bound at the same path, read-write (the scratch folder)
    devices: tuple[str, ...] = ()        # /dev nodes bound as they are (the GPU's)
    hidden: tuple[str, ...] = field(default=())  # covered by an empty tmpfs where a bind would show them

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> View:
        return cls(**{k: tuple(v) for k, v in json.loads(text).items()})


@functools.cache
def namespaces_available() -> bool:
    """True when `unshare` can give a process every namespace the sandbox uses (tried once, ~5 ms)."""
    if sys.platform != "linux" or shutil.which("unshare") is None or platform.machine() not in _PIVOT_ROOT:
        return False
    try:
        return subprocess.run([*UNSHARE, "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def view_for(scratch: Path, trainer_dir: Path, device: str, hidden: tuple[Path, ...] = ()) -> View:
    """The view of one sandboxed process: read-only code, its scratch, and `hidden` covered where a
    read-only bind (the Python installation, say) would otherwise show it."""
    python = {sys.prefix, sys.base_prefix, str(Path(sys.executable).resolve().parent.parent)}
    read_only = [p for p in _SYSTEM_DIRS if os.path.exists(p)] + [f"/etc/{name}" for name in _ETC_FILES
                                                                    if os.path.exists(f"/etc/{name}")]
    read_only += sorted(python) + [str(trainer_dir)]
    devices = []
    if device.startswith("cuda"):
        devices = sorted(str(p) for p in Path("/dev").glob("nvidia*"))
        read_only += ["/sys"]  # the CUDA driver reads the PCI topology there (/proc/driver/nvidia is in /proc)
    return View(tuple(read_only), (str(scratch),), tuple(devices), tuple(str(p) for p in hidden))


# ---------------------------------------------------------------- inside the new namespaces
def enter(view: View, new_root: str = "/tmp/.evotrain-root") -> None:
    """Build the view, pivot into it, drop every privilege. Called once, before any untrusted code."""
    cwd = os.getcwd()
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)  # nothing done here propagates back to the host
    os.makedirs(new_root, exist_ok=True)
    _mount("tmpfs", new_root, "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=755,size=16m")
    for path, options in (("/tmp", "mode=1777,size=256m"), ("/dev/shm", "mode=1777,size=256m")):
        os.makedirs(new_root + path, exist_ok=True)  # before the binds: the scratch folder may be in /tmp
        _mount("tmpfs", new_root + path, "tmpfs", _MS_NOSUID | _MS_NODEV, options)
    for path in view.read_only:
        _bind(path, new_root + path, writable=False)
    for path in view.writable:
        _bind(path, new_root + path, writable=True)
    for node in (*(f"/dev/{n}" for n in _DEV_NODES), *view.devices):
        _bind(node, new_root + node, writable=True)
    for path in view.hidden:
        if os.path.isdir(new_root + path):
            _mount("tmpfs", new_root + path, "tmpfs", _MS_NOSUID | _MS_NODEV | _MS_RDONLY, "size=4k")
    os.makedirs(new_root + "/proc", exist_ok=True)
    _mount("proc", new_root + "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
    old_root = new_root + "/.old-root"
    os.makedirs(old_root)
    _check(_libc().syscall(_PIVOT_ROOT[platform.machine()], new_root.encode(), old_root.encode()), "pivot_root")
    os.chdir("/")
    _check(_libc().umount2(b"/.old-root", _MNT_DETACH), "umount the old root")
    os.rmdir("/.old-root")
    os.chdir(cwd)
    _drop_privileges()


def become_init(runner: int) -> None:
    """Stay behind as the namespace's PID 1, a tiny reaper, and return in a forked child that carries on.

    When the child ends, PID 1 exits with its status (128 + the signal if it was killed), which
    `unshare` passes on: util-linux's own relaying of a child's signal fails ("sigprocmask unblock
    failed"), and the runner needs to tell a kill (the kernel's OOM killer's, say) from a crash.
    When the runner's end of the socket (`runner`) closes, the runner is gone (killed, say): PID 1
    exits and the kernel ends everything in the namespace, so no run outlives its runner either.
    The fork is cheap here: nothing but the standard library is loaded yet."""
    child = os.fork()
    if child == 0:
        return
    gone = select.poll()
    gone.register(runner, select.POLLRDHUP)  # the peer closed; no data is read, the child owns the socket
    while True:
        while True:  # every orphan in the namespace is ours to reap
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                os._exit(0)
            if pid == 0:
                break
            if pid == child:
                code = os.waitstatus_to_exitcode(status)
                os._exit(128 - code if code < 0 else code)
        if gone.poll(100):
            os._exit(128 + signal.SIGKILL)


def exit_code(code: int) -> int:
    """A sandboxed process's exit code as Popen reports one: negative signal numbers for kills."""
    return code - 128 if code > 128 else code


def _bind(source: str, target: str, writable: bool) -> None:
    if os.path.islink(source):  # /lib -> usr/lib on merged-/usr systems: the same link, not a mount
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.symlink(os.readlink(source), target)
        return
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()
    _mount(source, target, None, _MS_BIND | _MS_REC)
    flags = _MS_BIND | _MS_REMOUNT | _MS_NOSUID | (0 if writable else _MS_RDONLY)
    if not source.startswith("/dev/"):
        flags |= _MS_NODEV
    _mount(None, target, None, flags)


def _drop_privileges() -> None:
    libc = _libc()
    for capability in range(64):
        libc.prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0)  # fails past the last capability: harmless

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    _check(libc.capset(ctypes.byref(Header(_CAPABILITY_VERSION_3, 0)), (Data * 2)()), "capset")
    _check(libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    encode = lambda text: text.encode() if text is not None else None  # noqa: E731
    _check(_libc().mount(encode(source), encode(target), encode(fstype), flags, encode(data)), f"mount {target}")


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"sandbox setup: {what}: {os.strerror(errno)}")


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)
