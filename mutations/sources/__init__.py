"""Mutation sources: where proposed changes come from (catalog, LLM, replay of recorded LLM answers)."""
from __future__ import annotations

from pathlib import Path

from mutations.sources._base import Expectation, MutationSource, NoProposal, Outcome, Proposal, ProposalRequest
from trainer.errors import UserError

__all__ = ["Expectation", "MutationSource", "NoProposal", "Outcome", "Proposal", "ProposalRequest", "make_source"]


def make_source(spec: str, *, seed: int = 0, model: str | None = None, direction_file: Path | None = None,
                max_cost_usd: float | None = None, record_path: Path | None = None,
                device: str = "cuda") -> MutationSource:
    """`catalog` (or `catalog:MOVE,MOVE` for some moves), `anthropic` or `replay:PATH` as a source; the LLM
    ones are imported only when asked for."""
    if spec == "catalog" or spec.startswith("catalog:"):
        from mutations.catalog import MOVES
        from mutations.sources.catalog import CatalogSource

        names = [name.strip() for name in spec.removeprefix("catalog").lstrip(":").split(",") if name.strip()]
        unknown = [name for name in names if name not in MOVES]
        if unknown:
            raise UserError(f"unknown catalog move {unknown[0]!r} in --mutator {spec}: see `search catalog` for the names")
        return CatalogSource(seed=seed, moves=names or None, device=device)
    if spec == "anthropic":
        from mutations.sources.anthropic import DEFAULT_MODEL, AnthropicSource

        return AnthropicSource(model or DEFAULT_MODEL, direction_file=direction_file, max_cost_usd=max_cost_usd,
                               record_path=record_path)
    if spec.startswith("replay:"):
        from mutations.sources.replay import ReplaySource

        return ReplaySource(spec.removeprefix("replay:"), direction_file=direction_file)
    raise UserError(f"unknown mutator {spec!r}; use catalog, catalog:MOVE,MOVE, anthropic or replay:PATH "
                    "(a recorded llm.jsonl)")
