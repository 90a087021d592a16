"""Mutation sources: the catalog source proposes untried, applicable moves as canonical mutations."""
from __future__ import annotations

import pytest

from mutations.edits import apply_mutation
from mutations.sources import NoProposal, ProposalRequest
from mutations.sources.catalog import CatalogSource
from trainer.baselines import BASELINE

BASE = BASELINE.read_text()


def test_catalog_source_proposes_an_applicable_move_of_the_parent():
    proposal = CatalogSource(seed=1).propose(ProposalRequest(parent_source=BASE))
    assert proposal.mutation.name.startswith("catalog:")
    assert apply_mutation(BASE, proposal.mutation) != BASE


def test_catalog_source_skips_what_was_tried_and_then_runs_out():
    source = CatalogSource(seed=0, moves=["relu2", "attn_temperature", "adam_eps"])
    first = source.propose(ProposalRequest(parent_source=BASE))
    second = source.propose(ProposalRequest(parent_source=BASE, tried=frozenset({first.mutation.key})))
    assert {first.mutation.name, second.mutation.name} == {"catalog:relu2", "catalog:adam_eps"}  # attn_temperature needs qk_norm
    tried = frozenset({first.mutation.key, second.mutation.key})
    with pytest.raises(NoProposal, match="every catalog move"):
        source.propose(ProposalRequest(parent_source=BASE, tried=tried))
