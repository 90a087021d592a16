"""Recording LLM calls as JSON lines (mutations/sources/replay.py replays them): one line per successful call with
the request's fingerprint (sha256 of the exact parameters sent), the time, the usage and cost, the request, and the
raw response."""
from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from anthropic.types import Message

from mutations.sources.cost import Usage


def fingerprint(params: dict) -> str:
    text = json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


class Recorder:
    """Appends one JSON line per call; safe to share between threads."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def write(self, params: dict, response: Message, usage: Usage, cost_usd: float) -> None:
        record = {"fingerprint": fingerprint(params), "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "usage": asdict(usage), "cost_usd": cost_usd, "request": params,
                  "response": response.model_dump(mode="json")}
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with self._lock, self.path.open("a") as out:
            out.write(line)
