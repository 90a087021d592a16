"""The result channel: JSON lines from the runtime to the runner, never the script's stdout."""
from __future__ import annotations

import json
import os
import sys


class Channel:
    """Writes events to an inherited pipe the runner reads; the script's prints go elsewhere."""

    def __init__(self, fd: int) -> None:
        self._stream = os.fdopen(fd, "w", buffering=1, closefd=True)

    def send(self, event: dict) -> None:
        self._stream.write(json.dumps(event) + "\n")
        self._stream.flush()


class PrintChannel:
    """For `python train.py` run by hand: the same events, as short lines on stderr."""

    def send(self, event: dict) -> None:
        kind = event.get("event")
        if kind in ("probe", "result", "error"):
            shown = {k: v for k, v in event.items() if k not in ("event", "curve")}
            print(f"[evotrain {kind}] {json.dumps(shown)}", file=sys.stderr, flush=True)
