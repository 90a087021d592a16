"""Claude as a mutation source, through the anthropic SDK with a forced tool call.

One proposal is one short conversation: the prompt (mutations.sources.prompt), the model's
answer, and while the answer is not a valid new mutation of the parent (unparsable, does not
apply, refused by static validation, a no-op, already tried) the reason sent back, at most
`max_retries_invalid` times. API errors worth retrying (429, 5xx and 529 overloaded, timeouts,
dropped connections) are retried here with exponential backoff and jitter, honouring
Retry-After; the SDK's own retries are off so every attempt is counted here.

Concurrency: the SDK's sync client is thread-safe, so `submit` runs proposals on a thread pool
of `concurrency` workers and the evolve loop can keep several in flight while evaluators
train; `propose_many` is the batch form. Costs add up in a thread-safe meter; the budget is
checked before every call, so concurrent calls may overshoot it by at most one call each.

No temperature is sent: SDK 2.14's messages.create has no sampling parameters (current models
refuse non-default ones), so the model's default sampling gives the variety between calls.

Every call is recorded (mutations.sources.recording) when `record_path` is given, and
ReplaySource is this class with a client that answers from such a recording.
"""
from __future__ import annotations

import itertools
import logging
import random
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import anthropic

from mutations.edits import ApplyError
from mutations.sources._base import Expectation, MutationSource, NoProposal, Proposal, ProposalRequest
from mutations.sources.cost import CostMeter, Usage, price
from mutations.sources.recording import Recorder
from mutations.sources.prompt import (TOOL, TOOL_CHOICE, assistant_turn, feedback_turn, first_turn, parse_answer,
                                      system_blocks)
from mutations.units import addressable_units
from mutations.validation import validate_mutation
from trainer.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "claude-sonnet-5-5"  # the newest Sonnet in anthropic.types.model_param (SDK 2.14)
NO_KEY = "no Anthropic API key: set ANTHROPIC_API_KEY, or use --mutator catalog (needs no key)"


@dataclass(frozen=True)
class Backoff:
    """Retries of failed API calls: the server's Retry-After, else exponential with jitter."""

    retries: int = 6
    base_s: float = 1.0
    max_s: float = 60.0

    def delay(self, attempt: int, error: Exception) -> float:
        after = _retry_after(error)
        if after is not None:
            return min(after, self.max_s)
        step = min(self.max_s, self.base_s * 2**attempt)
        return step / 2 + random.uniform(0, step / 2)  # half fixed, half random: spreads concurrent retries


def _retry_after(error: Exception) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (an HTTP date there is ignored: backoff decides)."""
    response = getattr(error, "response", None)
    if response is None:
        return None
    for header, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        try:
            return float(response.headers[header]) * scale
        except (KeyError, ValueError):
            continue
    return None


def _retryable(error: anthropic.APIError) -> bool:
    if isinstance(error, anthropic.APIConnectionError):  # timeouts included
        return True
    return isinstance(error, anthropic.APIStatusError) and (error.status_code in (408, 409, 429)
                                                            or error.status_code >= 500)


def _describe(error: anthropic.APIError) -> str:
    """`429 rate_limit_error: ...` from the error body, or the exception's own message."""
    body = error.body if isinstance(error.body, dict) else {}
    detail = body.get("error")
    if isinstance(detail, dict) and isinstance(error, anthropic.APIStatusError):
        return f"{error.status_code} {detail.get('type')}: {detail.get('message')}"
    return f"{type(error).__name__}: {error.message}"


def _default_client() -> anthropic.Anthropic:
    try:
        client = anthropic.Anthropic(max_retries=0)  # Backoff does the retrying
    except anthropic.CredentialsError:  # a config directory without a usable profile
        raise UserError(NO_KEY) from None
    if client.api_key is None and client.auth_token is None and client.credentials is None:
        raise UserError(NO_KEY)
    return client


def _recorder(path: str | Path | None) -> Recorder | None:
    return Recorder(path) if path is not None else None


def _read_direction(path: str | Path | None) -> str:
    if path is None:
        return ""
    try:
        return Path(path).read_text()
    except OSError as error:
        raise UserError(f"cannot read the research direction file {path}: {error.strerror}; pass a markdown file "
                        f"like autoresearch's program.md") from None


class AnthropicSource(MutationSource):
    name = "anthropic"

    def __init__(self, model: str = DEFAULT_MODEL, direction_file: str | Path | None = None,
                 max_retries_invalid: int = 3, max_cost_usd: float | None = None,
                 record_path: str | Path | None = None, client: object | None = None, concurrency: int = 4,
                 max_tokens: int = 8192, backoff: Backoff = Backoff(),
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.model = model
        self.max_retries_invalid = max_retries_invalid
        self.max_cost_usd = max_cost_usd
        self.max_tokens = max_tokens
        self.backoff = backoff
        self.meter = CostMeter()
        self._price = price(model)
        self._direction = _read_direction(direction_file)
        self._client = client if client is not None else _default_client()
        self._recorder = _recorder(record_path)
        self._sleep = sleep
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="llm")  # starts threads on demand

    # -- proposing
    def propose(self, request: ProposalRequest) -> Proposal:
        messages = [first_turn(request, request.direction or self._direction)]
        spent = 0.0
        for _ in range(self.max_retries_invalid + 1):
            response, cost = self._call(messages)
            spent += cost
            if response.stop_reason == "refusal":
                raise NoProposal("the model declined this request (stop_reason refusal)")
            try:
                return self._proposal(request, response, spent)
            except ApplyError as error:
                reason = str(error)
            log.info("LLM answer refused: %s", reason.splitlines()[0])
            messages = [*messages, assistant_turn(response.content), feedback_turn(response.content, reason)]
        raise NoProposal(f"no valid answer in {self.max_retries_invalid + 1} tries; the last was refused: {reason}")

    def submit(self, request: ProposalRequest) -> Future:
        """propose(request) on the thread pool: its result is a Proposal or raises NoProposal."""
        return self._pool.submit(self.propose, request)

    def propose_many(self, requests: Sequence[ProposalRequest]) -> list[Proposal | NoProposal]:
        """One answer per request, in order, computed `concurrency` at a time."""
        futures = [self.submit(request) for request in requests]
        return [_result(future) for future in futures]

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def _proposal(self, request: ProposalRequest, response: object, cost: float) -> Proposal:
        """The answer as a proposal, or ApplyError with the reason to send back."""
        answer = parse_answer(request.parent_source, response.content, response.stop_reason)
        mutation = answer.mutation
        if mutation.key in request.tried:
            raise ApplyError("duplicate", "this change was already tried on this parent; propose a different one")
        child, verdict = validate_mutation(request.parent_source, mutation)
        if not verdict.ok:
            raise ApplyError("invalid", verdict.summary())
        missing = sorted(set(answer.new_knobs) - set(addressable_units(child)))
        if missing:
            raise ApplyError("missing_knob", f"new_knobs names {', '.join(missing)}, which the changed file does not "
                                             f"define at module level; define them or leave them out of new_knobs")
        summary = re.split(r"(?<=\.)\s|\n", answer.rationale.strip(), maxsplit=1)[0][:200]  # the first sentence
        return Proposal(mutation.named(f"llm:{self.model}:{mutation.key[:4]}", summary), answer.rationale,
                        answer.expected_effect, answer.new_knobs, cost, stated_expectation(answer.expected_effect))

    # -- calling the API
    def _call(self, messages: list[dict]) -> tuple[object, float]:
        """One answer and its cost; API errors retried with backoff."""
        if self.max_cost_usd is not None and self.meter.dollars >= self.max_cost_usd:
            raise NoProposal(f"LLM budget of ${self.max_cost_usd:.2f} reached (${self.meter.dollars:.4f} spent); "
                             f"raise --max-llm-cost to go on")
        params = {"model": self.model, "max_tokens": self.max_tokens, "system": system_blocks(), "tools": [TOOL],
                  "tool_choice": TOOL_CHOICE, "messages": messages}
        response = self._create(params)
        usage = Usage.of(response.usage)
        cost = usage.cost_usd(self._price)
        self.meter.add(usage, cost)
        if self._recorder is not None:
            self._recorder.write(params, response, usage, cost)
        return response, cost

    def _create(self, params: dict) -> object:
        for attempt in itertools.count():
            try:
                return self._client.messages.create(**params)
            except anthropic.AuthenticationError as error:
                raise UserError(f"the Anthropic API refused the key ({_describe(error)}): check ANTHROPIC_API_KEY, "
                                f"or use --mutator catalog") from None
            except anthropic.NotFoundError as error:
                raise UserError(f"the Anthropic API has no model {self.model!r} ({_describe(error)}): choose a "
                                f"current Claude model, or use --mutator catalog") from None
            except anthropic.APIError as error:
                if not _retryable(error):
                    raise NoProposal(f"the Anthropic API refused the request: {_describe(error)}") from None
                if attempt == self.backoff.retries:
                    raise NoProposal(f"the Anthropic API failed {attempt + 1} times; "
                                     f"last: {_describe(error)}") from None
                delay = self.backoff.delay(attempt, error)
                log.warning("Anthropic API: %s; retry %d/%d in %.1f s", _describe(error), attempt + 1,
                            self.backoff.retries, delay)
                self._sleep(delay)


_STATED = re.compile(r"([+-\u2212]?\s*\d*\.?\d+(?:e[+-]?\d+)?)\s*(?:val[_ ])?bpb", re.IGNORECASE)


def stated_expectation(text: str) -> Expectation | None:
    """The model's stated effect on val_bpb ("-0.01 val_bpb, 5% slower") as an expectation: a guess, so its
    spread is twice its size."""
    match = _STATED.search(text)
    if match is None:
        return None
    mean = float(match.group(1).replace("\u2212", "-").replace(" ", ""))
    return Expectation(mean, max(2 * abs(mean), 1e-3))


def _result(future: Future) -> Proposal | NoProposal:
    try:
        return future.result()
    except NoProposal as reason:
        return reason
