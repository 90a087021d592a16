"""The catalog as a mutation source: an applicable move not yet tried on this parent, at random.

Each proposal carries the move's measured effect as its expectation: every move alone against
the built-in CPU baseline at 300k tokens on 3 paired seeds (mutations/catalog/measured.csv,
from benchmarks/catalog_effects.py). A move measured on top of the moves it builds on is
expected to add its measured delta minus theirs.
"""
from __future__ import annotations

import csv
import random
from functools import cache
from pathlib import Path

from mutations.catalog import MOVES, NotApplicable
from mutations.diff import structural_diff
from mutations.sources._base import Expectation, MutationSource, NoProposal, Proposal, ProposalRequest

MEASURED = Path(__file__).resolve().parent.parent / "catalog" / "measured.csv"
MEASURED_ON = "built-in baseline, cpu, 300k"
_MIN_SD = 0.01   # a measured effect holds only roughly on top of other changes: never trust it tighter than this


@cache
def measured_effects() -> dict[str, Expectation]:
    """move -> its measured effect alone on the built-in CPU baseline (net of the moves it builds on)."""
    rows = {row["move"]: row for row in csv.DictReader(MEASURED.open())}
    found = {}
    for name, row in rows.items():
        mean = float(row["mean_delta"]) - sum(float(rows[r]["mean_delta"]) for r in row["requires"].split() if r in rows)
        # on top of other changes an effect shrinks or grows: half its size is the spread to expect
        found[name] = Expectation(mean, max(_MIN_SD, float(row["stderr"]), abs(mean) / 2), MEASURED_ON)
    return found


class CatalogSource(MutationSource):
    name = "catalog"
    exhaustive = True

    def __init__(self, seed: int = 0, moves: list[str] | None = None, device: str = "cuda") -> None:
        self._random = random.Random(seed)
        self._moves = [MOVES[name] for name in moves] if moves else list(MOVES.values())
        if device == "cpu":  # moves that change nothing measurable on CPU would only cost evaluations there
            self._moves = [move for move in self._moves if not move.cuda_only]

    def propose(self, request: ProposalRequest) -> Proposal:
        order = self._moves[:]
        self._random.shuffle(order)
        for move in order:
            if f"catalog:{move.name}" in request.exclude:
                continue
            try:
                changed = move.apply(request.parent_source)
            except NotApplicable:
                continue
            mutation = structural_diff(request.parent_source, changed, name=f"catalog:{move.name}",
                                       description=move.description)
            if mutation.key not in request.tried:
                return Proposal(mutation, rationale=move.description, expectation=measured_effects().get(move.name))
        raise NoProposal("every catalog move that applies to this parent has been tried")
