"""What LLM calls cost: token counts from each response, prices per model family, a running total.

Prices are US dollars per million tokens, from Anthropic's pricing page for the Claude 4.5
generation (older Opus models, 4.1 and before, cost three times as much). Cache writes (5-minute
TTL) cost 1.25x the input price and cache reads 0.1x; `input_tokens` in a response counts only
the uncached part of the prompt.
"""
from __future__ import annotations

import re
import threading
import warnings
from dataclasses import dataclass, fields

CACHE_WRITE = 1.25  # x the input price
CACHE_READ = 0.1


@dataclass(frozen=True)
class Price:
    input: float   # $ per million uncached input tokens
    output: float  # $ per million output tokens


FAMILY_PRICES = {
    "opus": Price(5.0, 25.0),
    "sonnet": Price(3.0, 15.0),
    "haiku": Price(1.0, 5.0),
}
DEFAULT_FAMILY = "sonnet"


def price(model: str) -> Price:
    """The price of `model` by its family; an unknown family gets the sonnet price and a warning."""
    family = re.search("|".join(FAMILY_PRICES), model)
    if family is None:
        warnings.warn(f"no price for model {model!r}: costs are counted at {DEFAULT_FAMILY} prices; add its family "
                      f"to mutations.sources.cost.FAMILY_PRICES", stacklevel=2)
        return FAMILY_PRICES[DEFAULT_FAMILY]
    return FAMILY_PRICES[family.group()]


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0

    @classmethod
    def of(cls, usage: object) -> Usage:
        """From a response's `usage` (an SDK object); missing cache counts are zero."""
        return cls(*(getattr(usage, f.name, 0) or 0 for f in fields(cls)))

    def __add__(self, other: Usage) -> Usage:
        return Usage(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def cost_usd(self, price: Price) -> float:
        prompt = (self.input_tokens + CACHE_WRITE * self.cache_creation_input_tokens
                  + CACHE_READ * self.cache_read_input_tokens)
        return (prompt * price.input + self.output_tokens * price.output) / 1e6


class CostMeter:
    """Calls, tokens and dollars of one source, shared by its concurrent requests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls = 0
        self.usage = Usage()
        self.dollars = 0.0

    def add(self, usage: Usage, dollars: float) -> None:
        with self._lock:
            self.calls += 1
            self.usage = self.usage + usage
            self.dollars += dollars

    def summary(self) -> str:
        """One line for progress output."""
        u = self.usage
        return (f"{self.calls} LLM calls, ${self.dollars:.4f}: {u.input_tokens} in, {u.output_tokens} out, "
                f"{u.cache_creation_input_tokens} cache write, {u.cache_read_input_tokens} cache read")
