"""The base of every mutation source: given a parent and what the search knows, propose a change.

Sources: the built-in catalog, an LLM (anthropic), and a replay of recorded LLM answers.
The evolve loop drives them through `propose`; each proposal is already a canonical
Mutation of the parent (normalised through the structural diff), not yet validated.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Outcome:
    """One earlier attempt, as the search measured it: fed back so a source learns from it."""

    mutation: str           # the mutation's name, e.g. "catalog:rmsnorm" or "llm:claude-...:1f3a"
    description: str
    status: str             # accepted, rejected, crashed, refused (static validation), pruned, pending
    delta: float | None = None       # mean paired delta val_bpb against the parent (negative = better)
    ci: tuple[float, float] | None = None
    detail: str = ""        # the refusal reason or the log tail's last lines


@dataclass(frozen=True)
class ProposalRequest:
    parent_source: str
    parent_id: str = ""
    direction: str = ""                         # the user's research direction (program.md style)
    lineage: tuple[Outcome, ...] = ()           # the mutations that made the parent, with what each measured
    siblings: tuple[Outcome, ...] = ()          # recent children of this parent and of its relatives
    knob_table: str = ""                        # mutations.knobs.knob_table(...).to_markdown() or similar
    ablation_table: str = ""                    # the combine step's ablation so far, as text
    tried: frozenset[str] = frozenset()         # Mutation.key of everything already tried on this parent
    exclude: frozenset[str] = frozenset()       # names of changes the search has already (catalog:rope, ...)
    other_parent_source: str | None = None      # crossover: a second parent whose changes conflict
    conflict: str = ""                          # crossover: the conflict to resolve, as mutations.merge reports it


@dataclass(frozen=True)
class Expectation:
    """What a source expects a change to do to val_bpb (negative = better), and on what that rests."""

    mean: float
    sd: float
    measured_on: str = ""   # "" for a guess; else where it was measured: "built-in baseline, cpu, 300k"


@dataclass(frozen=True)
class Proposal:
    mutation: object                            # mutations.edits.Mutation of the parent
    rationale: str = ""
    expected_effect: str = ""
    new_knobs: dict = field(default_factory=dict)  # name -> "# knob:" range text, for constants it introduces
    cost_usd: float = 0.0
    expectation: Expectation | None = None      # a number to start from, where the source has one


class NoProposal(Exception):
    """The source has nothing (more) to offer for this request; the message says why."""


class MutationSource(ABC):
    name: str
    exhaustive: bool = False   # proposals are cheap and finite: a strategy may ask for all of them up front

    @abstractmethod
    def propose(self, request: ProposalRequest) -> Proposal:
        """One new mutation of request.parent_source, not in request.tried; NoProposal if none."""
