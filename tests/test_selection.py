"""Parent weights, merge pairs and trimming on hand-made populations."""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace

import pytest

from population.selection import Member, parent_weights, select_pair, select_parent, trim

BASELINE = Member("base", 4.60)
POPULATION = [
    BASELINE,
    Member("a", 4.20, branch="a", mutations=frozenset({"muon"})),
    Member("b", 4.40, branch="b", mutations=frozenset({"rmsnorm"})),
    Member("c", 4.30, branch="c", mutations=frozenset({"relu2"})),
    Member("ab", 4.10, branch="a", mutations=frozenset({"muon", "rmsnorm"})),
    Member("d", 4.50, branch="d", mutations=frozenset({"wsd"})),
]


def _rescaled(members, scale=1.0, shift=0.0):
    return [replace(m, fitness=m.fitness * scale + shift) for m in members]


def test_weights_sum_to_one_and_follow_fitness():
    weights = parent_weights(POPULATION)
    assert sum(weights) == pytest.approx(1.0)
    by_fitness = [w for _, w in sorted(zip(POPULATION, weights), key=lambda mw: mw[0].fitness)]
    assert by_fitness == sorted(by_fitness, reverse=True) and by_fitness[0] > by_fitness[-1]


@pytest.mark.parametrize("scale, shift", [(10.0, 0.0), (1.0, 5.0), (0.001, -4.0)])
def test_weights_ignore_the_metric_scale(scale, shift):
    assert parent_weights(_rescaled(POPULATION, scale, shift)) == pytest.approx(parent_weights(POPULATION))


def test_explored_members_and_temperature():
    explored = [replace(m, children=8) if m.id == "ab" else m for m in POPULATION]
    index = [m.id for m in POPULATION].index("ab")
    assert parent_weights(explored)[index] < parent_weights(POPULATION)[index]
    flat, sharp = parent_weights(POPULATION, temperature=10.0), parent_weights(POPULATION, temperature=0.1)
    assert max(flat) - min(flat) < max(sharp) - min(sharp)
    with pytest.raises(ValueError, match="temperature"):
        parent_weights(POPULATION, temperature=0)


def test_tied_fitness_gets_equal_weight():
    weights = parent_weights([Member("x", 4.0), Member("y", 4.0, branch="y"), Member("z", 4.5, branch="z")])
    assert weights[0] == pytest.approx(weights[1]) and weights[0] > weights[2]


def test_select_parent_is_seeded_and_follows_the_weights():
    draws = [select_parent(POPULATION, random.Random(7)).id for _ in range(3)]
    assert len(set(draws)) == 1
    rng = random.Random(0)
    counts = Counter(select_parent(POPULATION, rng).id for _ in range(2000))
    for member, weight in zip(POPULATION, parent_weights(POPULATION)):
        assert counts[member.id] / 2000 == pytest.approx(weight, abs=0.035)
    with pytest.raises(ValueError, match="empty population"):
        select_parent([], rng)


def test_select_pair_never_merges_an_ancestor_with_its_descendant():
    rng = random.Random(0)
    for _ in range(200):
        a, b = select_pair(POPULATION, rng)
        assert a.id != b.id and not (a.mutations <= b.mutations or b.mutations <= a.mutations)


def test_select_pair_prefers_distant_mutation_sets():
    members = [Member("x", 4.0, mutations=frozenset({"m1"})), Member("y", 4.0, mutations=frozenset({"m2"})),
               Member("z", 4.0, mutations=frozenset({"m3", "m4", "m5"}))]
    rng = random.Random(1)
    counts = Counter(frozenset(m.id for m in select_pair(members, rng)) for _ in range(2000))
    # symmetric differences: x-y 2, x-z 4, y-z 4 -> probabilities 0.2, 0.4, 0.4
    assert counts[frozenset("xy")] / 2000 == pytest.approx(0.2, abs=0.04)
    assert counts[frozenset("xz")] / 2000 == pytest.approx(0.4, abs=0.04)


def test_select_pair_is_none_without_a_useful_merge():
    chain = [BASELINE, Member("a", 4.2, branch="a", mutations=frozenset({"m1"})),
             Member("a2", 4.1, branch="a", mutations=frozenset({"m1", "m2"})),
             Member("a3", 4.0, branch="a", mutations=frozenset({"m1", "m2", "m3"})),
             Member("a3-retuned", 3.9, branch="a", mutations=frozenset({"m1", "m2", "m3"}))]
    assert select_pair(chain, random.Random(0)) is None
    assert select_pair([BASELINE], random.Random(0)) is None
    assert select_pair([], random.Random(0)) is None


def test_trim_keeps_the_best():
    kept, dropped = trim(POPULATION, 3)
    assert [m.id for m in kept] == ["ab", "a", "c"] and [m.id for m in dropped] == ["b", "d", "base"]
    assert trim(POPULATION, 10) == (sorted(POPULATION, key=lambda m: m.fitness), [])


def test_trim_caps_a_branch_while_others_wait():
    a_branch = [Member(f"a{i}", 4.0 + i / 100, branch="a", mutations=frozenset({"muon", f"m{i}"})) for i in range(6)]
    b_branch = [Member("b0", 4.3, branch="b"), Member("b1", 4.4, branch="b")]
    kept, dropped = trim(a_branch + b_branch, 4)
    assert [m.id for m in kept] == ["a0", "a1", "b0", "b1"]
    assert [m.id for m in dropped] == ["a2", "a3", "a4", "a5"]
    kept, _ = trim(a_branch + b_branch, 5)   # cap 3
    assert [m.id for m in kept] == ["a0", "a1", "a2", "b0", "b1"]


def test_trim_fills_from_one_branch_when_the_others_are_empty():
    a_branch = [Member(f"a{i}", 4.0 + i / 100, branch="a") for i in range(6)]
    kept, dropped = trim(a_branch + [Member("b0", 4.5, branch="b")], 4)
    assert [m.id for m in kept] == ["a0", "a1", "a2", "b0"] and len(dropped) == 3
    kept, dropped = trim(a_branch, 4)
    assert [m.id for m in kept] == ["a0", "a1", "a2", "a3"] and [m.id for m in dropped] == ["a4", "a5"]


def test_trim_drops_the_baseline_only_when_size_members_beat_it():
    tied = [Member(f"a{i}", 4.6, branch=f"a{i}") for i in range(3)]
    kept, _ = trim([*tied, BASELINE], 3)
    assert BASELINE in kept                       # ties are not better
    better = [Member(f"a{i}", 4.0, branch=f"a{i}") for i in range(3)]
    kept, dropped = trim([BASELINE, *better], 3)
    assert BASELINE in dropped and len(kept) == 3


@pytest.mark.parametrize("size", range(1, 9))
def test_trim_never_keeps_more_than_size_and_loses_no_one(size):
    kept, dropped = trim(POPULATION, size)
    assert len(kept) == min(size, len(POPULATION))
    assert sorted(m.id for m in kept + dropped) == sorted(m.id for m in POPULATION)


def test_trim_rejects_an_empty_population_size():
    with pytest.raises(ValueError, match="at least 1"):
        trim(POPULATION, 0)
