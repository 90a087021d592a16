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
from population.store import DecisionKind, Variant
from search.context import Search
from search.snapshot import MemberView


class Pool:
    def __init__(self, search: Search) -> None:
        self.search, self.ladder, self.baseline = search, search.ladder, search.baseline

    def members(self) -> list[Variant]:
        """Accepted variants still in the population (not retired or dropped), best first."""
        state: dict[str, str] = {}
        for d in self.search.decisions():
            if d.kind in (DecisionKind.ACCEPTED, DecisionKind.RETIRED, DecisionKind.DROPPED):
                state[d.variant_id] = d.kind
        members = [self.search.variant(v) for v, kind in state.items() if kind == DecisionKind.ACCEPTED]
        return sorted(members, key=self.fitness)

    def fitness(self, variant: Variant) -> float:
        top = self.ladder.top
        scores = self.search.scores(variant.id, top.budget, top.seeds)
        return sum(scores.values()) / len(scores) if scores else math.inf

    def records(self) -> list[Member]:
        """The members as parent selection and trimming see them."""
        counts = Counter(v.parents[0] for v in self.search.variants() if v.parents)
        return [Member(v.id, self.fitness(v), counts[v.id], self._branch(v), self._lineage(v)) for v in self.members()]

    def trim(self, size: int) -> list[str]:
        """Drop the members a population of `size` has no room for; their ids."""
        _, dropped = trim(self.records(), size)
        for member in dropped:
            self.search.decide(member.id, DecisionKind.DROPPED, reason="population full: worse than the kept members")
        return [m.id for m in dropped]

    def views(self) -> list[MemberView]:
        """The members with their paired difference to the baseline, for the dashboard."""
        top = self.ladder.top
        base = self.search.scores(self.baseline.id, top.budget, top.seeds)
        views = []
        for variant in self.members():
            comparison = paired(self.search.scores(variant.id, top.budget, top.seeds), base)
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
            variant = self.search.variant(variant.parents[0])
        return "" if variant.id == self.baseline.id else variant.id

    def _lineage(self, variant: Variant) -> frozenset[str]:
        """The names of the changes a variant carries relative to the baseline."""
        if not variant.parents:
            return frozenset()
        own = frozenset() if variant.origin == "merge" else frozenset({f"{variant.origin}:{variant.id[:8]}"})
        return own.union(*(self._lineage(self.search.variant(p)) for p in variant.parents))


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None
