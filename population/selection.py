"""Parent selection, merge pairs and population trimming.

Selection works on fitness ranks, not values: val_bpb differences are 0.5 bpb on CPU pilots and
1e-3 on a GPU, and a rule on ranks behaves the same on both. Less-explored members get more
chances (novelty), and trimming caps each lineage branch so one early lucky line cannot take
over the whole population.
"""
from __future__ import annotations

import itertools
import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats


@dataclass(frozen=True)
class Member:
    id: str
    fitness: float                # mean top-rung val_bpb on the shared seeds (lower is better)
    children: int = 0             # children proposed from it so far
    branch: str = ""              # id of its ancestor that is a direct child of the baseline ("" for the baseline)
    mutations: frozenset[str] = frozenset()  # atomic mutations it carries relative to the baseline


def parent_weights(members: Sequence[Member], temperature: float = 1.0) -> list[float]:
    """Selection probabilities, one per member, summing to 1.

    weight = exp(-rank / (temperature * max(1, n / 3))) / sqrt(1 + children), with rank 0 the
    best fitness (ties share the better rank). At temperature 1 the weight falls by e every
    third of the population, so the worst member keeps about 5% of the best one's weight at any
    population size; higher temperatures flatten it. Dividing by sqrt(1 + children) moves
    proposals towards members that have been tried less.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, but got {temperature=}")
    if not members:
        return []
    fitness = [m.fitness for m in members]
    if any(math.isnan(f) for f in fitness):
        raise ValueError("a member has nan fitness: only measured members belong in a population")
    ranks = stats.rankdata(fitness, method="min") - 1
    scale = temperature * max(1.0, len(members) / 3)
    raw = [math.exp(-rank / scale) / math.sqrt(1 + m.children) for rank, m in zip(ranks, members)]
    total = sum(raw)
    return [w / total for w in raw]


def select_parent(members: Sequence[Member], rng: random.Random, temperature: float = 1.0) -> Member:
    """One member drawn by `parent_weights`."""
    if not members:
        raise ValueError("cannot select a parent from an empty population: add the baseline first")
    return rng.choices(members, weights=parent_weights(members, temperature))[0]


def select_pair(members: Sequence[Member], rng: random.Random) -> tuple[Member, Member] | None:
    """Two members to merge, or None when no merge could add anything.

    A pair where one's mutations are a subset of the other's (an ancestor and its descendant,
    the baseline with anyone, equal sets) is skipped: the merge would be one of the two. Among
    the rest a pair is drawn with probability proportional to the size of the symmetric
    difference of their mutation sets times both members' parent weights, so merges prefer
    distant, good and less-explored members.
    """
    weighted = zip(members, parent_weights(members))
    pairs, scores = [], []
    for (a, wa), (b, wb) in itertools.combinations(weighted, 2):
        if not (a.mutations <= b.mutations or b.mutations <= a.mutations):
            pairs.append((a, b))
            scores.append(len(a.mutations ^ b.mutations) * wa * wb)
    return rng.choices(pairs, weights=scores)[0] if pairs else None


def trim(members: Sequence[Member], size: int) -> tuple[list[Member], list[Member]]:
    """(kept, dropped), each best fitness first: keep at most `size` members.

    Members are taken best first, but no lineage branch may hold more than max(1, ceil(size/2))
    members while members of other branches wait; if slots remain once the other branches are
    used up, they are filled by fitness from the capped branch. The baseline is its own branch
    and wins fitness ties, so it is kept unless `size` members are strictly better than it.
    """
    if size < 1:
        raise ValueError(f"population size must be at least 1, but got {size=}")
    cap = max(1, math.ceil(size / 2))
    ranked = sorted(members, key=_trim_order)
    kept: list[Member] = []
    waiting: list[Member] = []
    per_branch: Counter[str] = Counter()
    for member in ranked:
        if len(kept) < size and per_branch[member.branch] < cap:
            kept.append(member)
            per_branch[member.branch] += 1
        else:
            waiting.append(member)
    # Slots left over means every uncapped branch is exhausted: fill them by fitness.
    filled = waiting[:size - len(kept)]
    kept = sorted(kept + filled, key=_trim_order)
    dropped = waiting[len(filled):]
    return kept, dropped


def _trim_order(member: Member) -> tuple[float, bool, str]:
    """Best fitness first; the baseline wins ties; ids make the order deterministic."""
    return member.fitness, member.branch != "", member.id
