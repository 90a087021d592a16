"""Recording LLM calls as JSON lines, and replaying them so a run reproduces without network.

One line per successful call: the request's fingerprint (sha256 of the exact parameters sent:
model, max_tokens, system, tools, tool choice, messages), the time, the usage and cost, the request,
and the raw response (`Message.model_dump`). ReplaySource is AnthropicSource with a client that
answers each request with the recorded response of the same fingerprint, so answers are parsed,
validated and fed back by the same code as in the recorded run, and the same inputs give the
same conversations, proposals and costs (what the recording cost; a replay spends nothing).
A request whose fingerprint was not recorded (the prompt, the parent or the code changed) gets
NoProposal naming it: there is no approximate matching. Identical requests (the same parent
asked twice) get their recorded answers in the recorded order.
"""
from __future__ import annotations

import json
import threading
from collections import deque
from pathlib import Path

from anthropic.types import Message

from mutations.sources._base import NoProposal
from mutations.sources.anthropic import AnthropicSource
from mutations.sources.recording import fingerprint
from trainer.errors import UserError


def _load(path: Path) -> list[dict]:
    try:
        lines = path.read_text().splitlines()
    except OSError as error:
        raise UserError(f"cannot read the LLM recording {path}: {error.strerror}; record one with "
                        f"--mutator anthropic") from None
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise UserError(f"{path} line {number} is not JSON ({error.msg}); the recording is damaged") from None
    if not records:
        raise UserError(f"{path} holds no recorded LLM calls; record a run with --mutator anthropic first")
    return records


class ReplayClient:
    """Stands in for anthropic.Anthropic: `messages.create(**params)` answers from a recording."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        records = _load(self.path)
        first = records[0]["request"]
        self.settings = {key: first[key] for key in ("model", "max_tokens")}
        self._answers: dict[str, deque] = {}
        for record in records:
            self._answers.setdefault(record["fingerprint"], deque()).append(record["response"])
        self._lock = threading.Lock()
        self.messages = self  # the SDK's client.messages.create(...) spelling

    def create(self, **params: object) -> Message:
        key = fingerprint(params)
        with self._lock:
            answers = self._answers.get(key)
            if answers is None:
                raise NoProposal(f"no recorded answer for this request (fingerprint {key[:12]}) in {self.path}: the "
                                 f"prompt differs from the recorded run's; replay with the same inputs and code")
            if not answers:
                raise NoProposal(f"every recorded answer to this request (fingerprint {key[:12]}) in {self.path} "
                                 f"was used")
            return Message.model_validate(answers.popleft())


class ReplaySource(AnthropicSource):
    """The recorded run's answers, through AnthropicSource's own parsing, validation and feedback."""

    name = "replay"

    def __init__(self, path: str | Path, **options: object) -> None:
        client = ReplayClient(path)
        super().__init__(**{**client.settings, **options, "client": client})
