"""Training budgets: wall-clock seconds, training tokens, or training FLOPs.

Written as `30s`, `2min`, `1h` (seconds), `500k`, `2M`, `1G`, `600000tok` (tokens) or `2.5Tflop`,
`300Gflop`, `1e15flop` (FLOPs). `5m` is refused as ambiguous: minutes and mega-tokens look alike.

A FLOP budget matches compute rather than data: the runner charges every served token 3x the
forward FLOPs per token of the variant's own model (forward and backward, Kaplan et al. 2020), as
the runtime declares them at the first step; the trusted scorer counts them itself on the exported
model, and a run that declared less is over budget. A bigger model gets fewer tokens, where a
token budget hands it more compute for free (benchmarks/compute_unit.py).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from trainer.errors import UserError


class BudgetUnit(str, Enum):
    SECONDS = "seconds"
    TOKENS = "tokens"
    FLOPS = "flops"


_SECOND_SUFFIXES = {"s": 1, "sec": 1, "min": 60, "h": 3600}
_TOKEN_SUFFIXES = {"tok": 1, "t": 1, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9}
_SI = {"": 1, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15}
_FLOP = re.compile(r"^([kKMGTP]?)flops?$", re.IGNORECASE)
_PATTERN = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([A-Za-z]*)\s*$")


@dataclass(frozen=True)
class Budget:
    amount: float
    unit: BudgetUnit

    def __post_init__(self) -> None:
        if not self.amount > 0:
            raise UserError(f"budget must be positive, but got {self.amount} {self.unit.value}")

    @classmethod
    def parse(cls, text: str) -> Budget:
        match = _PATTERN.match(text)
        if not match:
            raise UserError(f"cannot read budget {text!r}: write seconds like 30s or 2min, tokens like 500k or 2M, "
                            "or FLOPs like 2.5Tflop")
        number, suffix = float(match.group(1)), match.group(2)
        if suffix == "m":
            raise UserError(f"budget {text!r} is ambiguous: write {match.group(1)}min for minutes or {match.group(1)}M for tokens")
        if suffix in _SECOND_SUFFIXES:
            return cls(number * _SECOND_SUFFIXES[suffix], BudgetUnit.SECONDS)
        if suffix in _TOKEN_SUFFIXES:
            return cls(round(number * _TOKEN_SUFFIXES[suffix]), BudgetUnit.TOKENS)
        if (flop := _FLOP.match(suffix)) and flop.group(1) in _SI:
            return cls(number * _SI[flop.group(1)], BudgetUnit.FLOPS)
        if suffix == "":
            raise UserError(f"budget {text!r} needs a unit: 30s or 2min for seconds, 500k or 2M for tokens")
        raise UserError(f"unknown budget unit {suffix!r} in {text!r}: use s, min, h for seconds, k, M, G, tok for "
                        "tokens or Gflop, Tflop, Pflop for FLOPs")

    def scaled(self, fraction: float) -> Budget:
        """A shorter (or longer) budget of the same unit, for lower fidelity rungs."""
        amount = self.amount * fraction
        return Budget(round(amount) if self.unit is BudgetUnit.TOKENS else amount, self.unit)

    def __str__(self) -> str:
        if self.unit is BudgetUnit.SECONDS:
            return f"{self.amount:g}s"
        if self.unit is BudgetUnit.FLOPS:
            prefix = next(p for p in ("P", "T", "G", "M", "k", "") if self.amount >= _SI[p] or p == "")
            return f"{self.amount / _SI[prefix]:.12g}{prefix}flop"
        for suffix, size in (("G", 10**9), ("M", 10**6), ("k", 10**3)):
            value = self.amount / size
            if value >= 1 and value == round(value, 3):
                return f"{value:g}{suffix}"
        return f"{int(self.amount)}tok"

    def to_dict(self) -> dict:
        return {"amount": self.amount, "unit": self.unit.value}

    @classmethod
    def from_dict(cls, data: dict) -> Budget:
        return cls(data["amount"], BudgetUnit(data["unit"]))
