"""Asynchronous successive halving (Li et al. 2020, "A System for Massively Parallel Hyperparameter Tuning").

A candidate that completes rung r is promoted to rung r+1 as soon as it ranks in the best
1/eta of every candidate that has completed rung r so far; nobody waits for a generation
to fill. The score is the candidate's paired difference to its reference (its parent) on
the rung's seeds, so children of strong and weak parents are ranked by what their
mutation did, not by where their parent stood. A candidate worse than its reference by
more than the rung's margin (the seed noise measured there) is never promoted, however few
candidates there are: with one seed at the lowest rung, a lucky draw of the parent would
otherwise block every child compared against it.
"""
from __future__ import annotations

from collections import defaultdict


class Asha:
    def __init__(self, rungs: int, eta: int, margins: list[float] | None = None) -> None:
        self.rungs, self.eta = rungs, eta
        self.margins = list(margins) if margins else [0.0] * rungs  # promotable while score < margin
        self._scores: dict[int, dict[str, float]] = defaultdict(dict)
        self._promoted: dict[int, set[str]] = defaultdict(set)
        self._closed: set[str] = set()

    def record(self, rung: int, variant: str, score: float) -> None:
        """A candidate completed `rung` with this score (lower is better)."""
        self._scores[rung][variant] = score

    def mark_promoted(self, rung: int, variant: str) -> None:
        """Restore a promotion a resumed search finds in the store."""
        self._promoted[rung].add(variant)

    def close(self, variant: str) -> None:
        """The candidate is out (rejected, failed, pruned); its scores stay in the rankings as data."""
        self._closed.add(variant)

    def promotions(self, draining: bool = False) -> list[tuple[str, int]]:
        """(variant, next rung) for every candidate that has earned a promotion since the last call.

        Draining (no more candidates will come), a rung promotes its best ceil(n / eta) instead of
        floor(n / eta): the last few candidates would otherwise wait for competitors forever."""
        found = []
        for rung in range(self.rungs - 2, -1, -1):
            ranked = sorted(self._scores[rung].items(), key=lambda item: item[1])
            quota = -(-len(ranked) // self.eta) if draining else len(ranked) // self.eta
            for variant, score in ranked[:quota]:
                if score < self.margins[rung] and variant not in self._promoted[rung] and variant not in self._closed:
                    self._promoted[rung].add(variant)
                    found.append((variant, rung + 1))
        return found

    def waiting(self) -> list[str]:
        """Candidates that completed a rung below the top and were neither promoted nor closed."""
        return [v for rung in range(self.rungs - 1) for v in self._scores[rung]
                if v not in self._closed and v not in self._promoted[rung]]

    def occupancy(self) -> list[int]:
        """How many candidates have completed each rung."""
        return [len(self._scores[rung]) for rung in range(self.rungs)]
