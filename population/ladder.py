"""The fidelity ladder: rungs of (budget, seeds) that a candidate climbs, and the seeds it is judged on.

Every variant is evaluated on the same seeds at a rung (rung r uses the first n_r seeds of
one list), so a child and its parent, or any variant and the baseline, are always compared
on paired runs. Fresh seeds for re-checking elites and held-out test seeds come from
separate ranges, so they never coincide with the search seeds.
"""
from __future__ import annotations

from dataclasses import dataclass

from trainer.budget import Budget
from trainer.errors import UserError

SMOKE_BUDGET = Budget.parse("1tok")  # a smoke run: the first optimizer step spends it
_RECHECK_SEEDS_START = 100
_TEST_SEEDS_START = 1000


@dataclass(frozen=True)
class Rung:
    index: int
    budget: Budget
    seeds: tuple[int, ...]

    @property
    def label(self) -> str:
        return str(self.budget)


@dataclass(frozen=True)
class Ladder:
    rungs: tuple[Rung, ...]
    eta: int
    base_seed: int = 0

    @classmethod
    def build(cls, top: Budget, fractions: tuple[float, ...], seeds: tuple[int, ...], eta: int,
              base_seed: int = 0) -> Ladder:
        if len(fractions) != len(seeds):
            raise UserError(f"the ladder has {len(fractions)} budget fractions but {len(seeds)} seed counts: "
                            "give one seed count per rung, e.g. --fractions 1/4,1/2,1 --seeds 1,2,3")
        if list(fractions) != sorted(set(fractions)) or fractions[-1] != 1:
            raise UserError(f"rung fractions {list(fractions)} must increase and end at 1 (the full budget)")
        if fractions[0] <= 0 or any(n < 1 for n in seeds) or list(seeds) != sorted(seeds):
            raise UserError(f"rung seeds {list(seeds)} must be at least 1 and never decrease up the ladder")
        if eta < 2:
            raise UserError(f"eta must be at least 2 (promote the best 1/eta), but got {eta}")
        rungs = tuple(Rung(i, top.scaled(f), tuple(base_seed + k for k in range(n)))
                      for i, (f, n) in enumerate(zip(fractions, seeds)))
        budgets = [str(r.budget) for r in rungs]
        if len(set(budgets)) != len(budgets):
            raise UserError(f"two rungs have the same budget ({', '.join(budgets)}): use a larger --budget "
                            "or fractions further apart")
        return cls(rungs, eta, base_seed)

    @property
    def top(self) -> Rung:
        return self.rungs[-1]

    def rung_of(self, budget: str) -> Rung | None:
        return next((r for r in self.rungs if r.label == budget), None)

    def recheck_seeds(self, start: int, count: int) -> tuple[int, ...]:
        """Fresh seeds for the start-th re-check onwards: never used by the rungs or the test."""
        first = self.base_seed + _RECHECK_SEEDS_START + start
        return tuple(range(first, first + count))

    def test_seeds(self, count: int) -> tuple[int, ...]:
        return tuple(range(self.base_seed + _TEST_SEEDS_START, self.base_seed + _TEST_SEEDS_START + count))

    def to_dict(self) -> dict:
        return {"budgets": [str(r.budget) for r in self.rungs], "seeds": [list(r.seeds) for r in self.rungs],
                "eta": self.eta, "base_seed": self.base_seed}

    @classmethod
    def from_dict(cls, data: dict) -> Ladder:
        rungs = tuple(Rung(i, Budget.parse(budget), tuple(seeds))
                      for i, (budget, seeds) in enumerate(zip(data["budgets"], data["seeds"])))
        return cls(rungs, data["eta"], data["base_seed"])
