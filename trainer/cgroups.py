"""A cgroup per sandboxed process tree, where the machine lets us make one: a memory limit, a
process-count limit, the CPU time of every process in it (measured from outside, so a variant
cannot hide compute in threads or children), and a kill that reaches all of them.

cgroup v1 (a hierarchy per controller) and v2 (one unified hierarchy with the controllers
delegated to us) are both used. Each run's group is made under this process's own group of each
controller. Where no group can be made, `RunGroup.create` returns None and the runner falls back
to watching the process tree with psutil; PID-namespace teardown still kills the whole tree.
"""
from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

_ROOT = Path("/sys/fs/cgroup")
_V1 = ("memory", "pids", "cpuacct")
_V2_NEEDED = {"memory", "pids", "cpu"}
_EMPTY_WAIT_S = 5.0  # for killed processes to leave the group before it is removed


class RunGroup:
    """One run's cgroup: in v1 one folder per controller, in v2 a single folder."""

    def __init__(self, folders: dict[str, Path], unified: bool) -> None:
        self._folders = folders  # controller -> folder ("unified" -> the v2 folder)
        self._unified = unified

    @classmethod
    def create(cls, memory_mb: int, max_processes: int) -> RunGroup | None:
        """A new group with these limits, or None when this machine gives us none."""
        name = f"evotrain-{uuid.uuid4().hex[:12]}"
        try:
            group = cls._make_v1(name) or cls._make_v2(name)
            if group is not None:
                group._limit(memory_mb, max_processes)
            return group
        except OSError:
            return None

    @classmethod
    def _make_v1(cls, name: str) -> RunGroup | None:
        own = _own_groups()
        if not all((_ROOT / c).is_dir() and c in own for c in _V1):
            return None
        folders = {}
        try:
            for controller in _V1:
                folders[controller] = _ROOT / controller / own[controller].lstrip("/") / name
                folders[controller].mkdir()
        except OSError:
            RunGroup(folders, unified=False).remove()
            return None
        return cls(folders, unified=False)

    @classmethod
    def _make_v2(cls, name: str) -> RunGroup | None:
        """Under this process's own group, or beside it: a v2 group with processes in it cannot hand
        controllers to children (the no-internal-processes rule), so a delegated parent is the usual place."""
        own = _own_groups().get("")
        mount = _ROOT if (_ROOT / "cgroup.controllers").exists() else _ROOT / "unified"
        if own is None or not (mount / "cgroup.controllers").exists():
            return None
        for parent in (mount / own.lstrip("/"), (mount / own.lstrip("/")).parent):
            try:
                if _V2_NEEDED <= set((parent / "cgroup.subtree_control").read_text().split()):
                    (parent / name).mkdir()
                    return cls({"unified": parent / name}, unified=True)
            except OSError:
                continue
        return None

    def _limit(self, memory_mb: int, max_processes: int) -> None:
        if self._unified:
            self._write("unified", "memory.max", memory_mb << 20)
            self._write("unified", "pids.max", max_processes)
        else:
            self._write("memory", "memory.limit_in_bytes", memory_mb << 20)
            self._write("pids", "pids.max", max_processes)

    def add(self, pid: int) -> None:
        """Move a process (and the children it starts from now on) into the group."""
        for controller in self._folders:
            self._write(controller, "cgroup.procs", pid)

    def cpu_seconds(self) -> float:
        if self._unified:
            return _fields(self._read("unified", "cpu.stat")).get("usage_usec", 0) / 1e6
        return int(self._read("cpuacct", "cpuacct.usage") or 0) / 1e9

    def memory_mb(self) -> float:
        name = ("unified", "memory.current") if self._unified else ("memory", "memory.usage_in_bytes")
        return int(self._read(*name) or 0) / 2**20

    def peak_memory_mb(self) -> float:
        name = ("unified", "memory.peak") if self._unified else ("memory", "memory.max_usage_in_bytes")
        return int(self._read(*name) or 0) / 2**20

    def oom_killed(self) -> bool:
        name = ("unified", "memory.events") if self._unified else ("memory", "memory.oom_control")
        return _fields(self._read(*name)).get("oom_kill", 0) > 0

    def kill(self) -> None:
        """SIGKILL every process in the group, including any started while killing."""
        if self._unified and (self._folders["unified"] / "cgroup.kill").exists():
            self._write("unified", "cgroup.kill", 1)
            return
        controller = next(iter(self._folders))
        for _ in range(100):
            pids = self._pids(controller)
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def remove(self) -> None:
        """Remove the group once its processes are gone (call after kill())."""
        deadline = time.monotonic() + _EMPTY_WAIT_S
        for controller, folder in self._folders.items():
            while self._pids(controller) and time.monotonic() < deadline:
                time.sleep(0.01)
            try:
                folder.rmdir()
            except OSError:
                pass  # still busy or already gone: an empty group costs nothing and is named uniquely

    def _pids(self, controller: str) -> list[int]:
        return [int(pid) for pid in (self._read(controller, "cgroup.procs") or "").split()]

    def _read(self, controller: str, name: str) -> str:
        try:
            return (self._folders[controller] / name).read_text()
        except OSError:
            return ""

    def _write(self, controller: str, name: str, value: int) -> None:
        (self._folders[controller] / name).write_text(str(value))


def _own_groups() -> dict[str, str]:
    """controller -> this process's group path ("" -> its v2 group)."""
    groups = {}
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return groups
    for line in lines:
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            groups[controller] = path
    return groups


def _fields(text: str) -> dict[str, int]:
    """`key value` lines as a dict (cpu.stat, memory.events, memory.oom_control)."""
    found = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            found[key] = int(value)
    return found
