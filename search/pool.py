"""The population as the search sees it: who is in, how fit, from which lineage, and trimming.

Membership is read from the store's decisions (accepted, until retired or dropped), so a
resumed search has the same population. Fitness is the mean top-rung val_bpb on the shared
seeds, comparable across members because every member ran on the same seeds.
"""
from __future__ import annotations

import math
from collections import Counter

from population.selection import Member, trim
from population.stats import paired
from population.store import Store, Variant
from search.evaluator import Evaluator
from search.ladder import Ladder
from search.snapshot import MemberView


class Pool:
    def __init__(self, store: Store, evaluator: Evaluator, ladder: Ladder, baseline: Variant,
                 variants: dict[str, Variant]) -> None:
        self.store, self.evaluator, self.ladder, self.baseline = store, evaluator, ladder, baseline
        self.variants = variants  # shared with the driver, which adds every new variant

    def members(self) -> list[Variant]:
        """Accepted variants still in the population (not retired or dropped), best first."""
        state: dict[str, str] = {}
        for d in self.store.decisions():
            if d.kind in ("accepted", "retired", "dropped"):
                state[d.variant_id] = d.kind
        members = [self.variants[v] for v, kind in state.items() if kind == "accepted" and v in self.variants]
        return sorted(members, key=self.fitness)

    def fitness(self, variant: Variant) -> float:
        top = self.ladder.top
        scores = self.evaluator.scores(variant.id, top.budget, top.seeds)
        return sum(scores.values()) / len(scores) if scores else math.inf

    def records(self) -> list[Member]:
        """The members as parent selection and trimming see them."""
        counts = Counter(v.parents[0] for v in self.variants.values() if v.parents)
        return [Member(v.id, self.fitness(v), counts[v.id], self._branch(v), self._lineage(v)) for v in self.members()]

    def trim(self, size: int) -> list[str]:
        """Drop the members a population of `size` has no room for; their ids."""
        _, dropped = trim(self.records(), size)
        for member in dropped:
            self.store.decide(member.id, "dropped", detail={"reason": "population full: worse than the kept members"})
        return [m.id for m in dropped]

    def views(self) -> list[MemberView]:
        """The members with their paired difference to the baseline, for the dashboard."""
        top = self.ladder.top
        base = self.evaluator.scores(self.baseline.id, top.budget, top.seeds)
        views = []
        for variant in self.members():
            comparison = paired(self.evaluator.scores(variant.id, top.budget, top.seeds), base)
            if comparison is None:
                continue
            description = (variant.mutation or {}).get("description", "the baseline")
            views.append(MemberView(variant.id[:8], variant.origin, description[:80], self.fitness(variant),
                                    comparison.mean, _finite(comparison.ci_low), _finite(comparison.ci_high),
                                    comparison.n))
        return views

    def _branch(self, variant: Variant) -> str:
        """The ancestor that is a direct child of the baseline: the lineage a member belongs to."""
        while variant.parents and variant.parents[0] != self.baseline.id:
            variant = self.variants[variant.parents[0]]
        return "" if variant.id == self.baseline.id else variant.id

    def _lineage(self, variant: Variant) -> frozenset[str]:
        """The names of the changes a variant carries relative to the baseline."""
        if not variant.parents:
            return frozenset()
        own = frozenset() if variant.origin == "merge" else frozenset({f"{variant.origin}:{variant.id[:8]}"})
        return own.union(*(self._lineage(self.variants[p]) for p in variant.parents))


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None
