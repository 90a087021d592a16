"""The catalog as a mutation source: an applicable move not yet tried on this parent, at random."""
from __future__ import annotations

import random

from mutations.catalog import MOVES, NotApplicable
from mutations.diff import structural_diff
from mutations.sources._base import MutationSource, NoProposal, Proposal, ProposalRequest


class CatalogSource(MutationSource):
    name = "catalog"

    def __init__(self, seed: int = 0, moves: list[str] | None = None, device: str = "cuda") -> None:
        self._random = random.Random(seed)
        self._moves = [MOVES[name] for name in moves] if moves else list(MOVES.values())
        if device == "cpu":  # moves that change nothing measurable on CPU would only cost evaluations there
            self._moves = [move for move in self._moves if not move.cuda_only]

    def propose(self, request: ProposalRequest) -> Proposal:
        order = self._moves[:]
        self._random.shuffle(order)
        for move in order:
            try:
                changed = move.apply(request.parent_source)
            except NotApplicable:
                continue
            mutation = structural_diff(request.parent_source, changed, name=f"catalog:{move.name}",
                                       description=move.description)
            if mutation.key not in request.tried:
                return Proposal(mutation, rationale=move.description)
        raise NoProposal("every catalog move that applies to this parent has been tried")
