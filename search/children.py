"""Making children: a structural mutation from a source, an Optuna knob trial, or a merge of two members.

Every child carries its mutation relative to its reference parent (the first of its
parents): the variant it is compared with on paired seeds and the one the ablation rebases
from. Structural children are validated statically here; the driver smoke-runs them.
"""
from __future__ import annotations

from dataclasses import dataclass

from mutations.diff import structural_diff
from mutations.edits import Mutation, apply_mutation
from mutations.merge import MergeConflict, merge
from mutations.sources import Expectation, MutationSource, NoProposal, Outcome, ProposalRequest
from mutations.validation import validate_mutation, validate_source
from population.stats import Paired
from population.store import Decision, DecisionKind, Variant
from search.knob_tuning import KnobTuner

_SIBLINGS_SHOWN = 8


@dataclass(frozen=True)
class Child:
    source: str
    mutation: Mutation          # relative to parents[0]
    origin: str                 # catalog:NAME, llm:MODEL, tune, merge
    parents: tuple[str, ...]    # the reference parent first
    trial_id: int | None = None  # the Optuna trial of a knob child
    rationale: str = ""
    cost_usd: float = 0.0
    refusal: str = ""           # why static validation refused it ("" = valid)
    expectation: Expectation | None = None  # what the source expected it to do

    @property
    def needs_smoke(self) -> bool:
        """Knob trials change literals only; code changes get a one-step run before real budget."""
        return self.origin != "tune" and not self.refusal


class NoChild(Exception):
    """This kind of child cannot be made from these parents now; the message says why."""


def structural(source: MutationSource, parent: Variant, request: ProposalRequest) -> Child:
    try:
        proposal = source.propose(request)
    except NoProposal as error:
        raise NoChild(str(error)) from None
    mutation = proposal.mutation
    child, verdict = validate_mutation(parent.source, mutation)
    origin = ":".join(mutation.name.split(":")[:2]) or source.name  # llm:MODEL:KEY -> llm:MODEL
    return Child(child if child is not None else parent.source, mutation, origin, (parent.id,),
                 rationale=proposal.rationale, cost_usd=proposal.cost_usd,
                 refusal="" if verdict.ok and child is not None else verdict.summary(),
                 expectation=proposal.expectation)


def proposal_request(parent: Variant, variants: dict[str, Variant], decisions: list[Decision],
                     direction: str = "", exclude: frozenset[str] = frozenset()) -> ProposalRequest:
    """What a mutation source is told about a parent: its lineage and its recent children, each with
    what the search measured, and every change already tried on it (so none is proposed twice)."""
    outcomes = {d.variant_id: d for d in decisions if DecisionKind(d.kind).ends_climb()}
    siblings = [v for v in variants.values() if v.parents and v.parents[0] == parent.id]
    lineage, walk = [], parent
    while walk.parents:
        lineage.append(_outcome(walk, outcomes.get(walk.id)))
        walk = variants[walk.parents[0]]
    return ProposalRequest(parent.source, parent.id, direction=direction, lineage=tuple(reversed(lineage)),
                           siblings=tuple(_outcome(v, outcomes.get(v.id)) for v in siblings[-_SIBLINGS_SHOWN:]),
                           tried=frozenset(Mutation.from_dict(v.mutation).key for v in siblings if v.mutation),
                           exclude=exclude)


def _outcome(variant: Variant, decision: Decision | None) -> Outcome:
    mutation = variant.mutation or {}
    detail = decision.detail if decision else {}
    comparison = Paired.from_dict(detail["paired"]) if detail.get("paired") else None
    return Outcome(mutation.get("name", variant.origin), mutation.get("description", ""),
                   decision.kind if decision else "pending", comparison.mean if comparison else None,
                   (comparison.ci_low, comparison.ci_high) if comparison else None, detail.get("reason", ""))


def tune(tuner: KnobTuner, parent: Variant) -> Child:
    asked = tuner.ask(parent.id, parent.source)
    if asked is None:
        raise NoChild(f"{parent.id[:8]} has no knob values left to try")
    trial_id, source, values = asked
    mutation = structural_diff(parent.source, source, name="tune",
                               description=", ".join(f"{k}={_short(v)}" for k, v in sorted(values.items())))
    return Child(source, mutation, "tune", (parent.id,), trial_id=trial_id)


def merged(baseline: str, a: Variant, b: Variant, fitness: dict[str, float]) -> Child:
    """Both members' changes from the baseline in one child; compared with the better of the two."""
    try:
        combined = merge(baseline, structural_diff(baseline, a.source), structural_diff(baseline, b.source))
    except MergeConflict as conflict:
        raise NoChild(f"{a.id[:8]} and {b.id[:8]} conflict at {conflict}") from None
    source = apply_mutation(baseline, combined)
    if validate_source(source, baseline=baseline).refusals:
        raise NoChild(f"the merge of {a.id[:8]} and {b.id[:8]} does not validate")
    better, other = sorted((a, b), key=lambda v: fitness[v.id])
    mutation = structural_diff(better.source, source, name="merge", description=f"merge with {other.id[:8]}")
    if not mutation.edits:
        raise NoChild(f"{other.id[:8]} adds nothing to {better.id[:8]}")
    return Child(source, mutation, "merge", (better.id, other.id))


def _short(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
