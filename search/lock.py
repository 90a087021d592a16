"""One search per run directory: an exclusive lock the kernel releases when the holder dies.

`flock` is tied to the open file, so a search killed with SIGKILL leaves no stale lock and
the same command resumes at once; `search status` tells a live run by trying the lock.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

from trainer.errors import UserError

LOCK_FILE = ".lock"


class RunLock:
    def __init__(self, run_dir: Path) -> None:
        self._path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise UserError(f"{self._path.parent} is in use by another search (pid {holder}): wait for it, "
                            "stop it, or pick another --name") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the lock
            self._fd = None
