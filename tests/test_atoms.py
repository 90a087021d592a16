"""Atoms and stacks (search/atoms.py, search/stacks.py): rebasing, merging stacks, knob levels, the best stack."""
from __future__ import annotations

import math

import numpy as np
import pytest

from mutations.catalog import MOVES
from mutations.diff import structural_diff
from mutations.edits import apply_mutation
from mutations.knobs import extract_knobs, set_knobs
from mutations.merge import merge
from population.additive import Effects
from search.atoms import Atom, Atoms, knob_atom, knob_atoms, knob_grid, rebase
from search.stacks import best_stack, flips
from trainer.baselines import BASELINE

BASE = BASELINE.read_text()


def _catalog(*names: str) -> Atoms:
    atoms = Atoms(BASE)
    for name in names:
        atoms.add(Atom(name, structural_diff(BASE, MOVES[name].apply(BASE), name), "catalog"))
    return atoms


def test_a_change_proposed_on_top_of_others_is_rebased_onto_the_baseline():
    parent = MOVES["rope"].apply(BASE)
    child = MOVES["relu2"].apply(parent)
    mutation, bundled = rebase(BASE, parent, child)
    assert not bundled
    assert apply_mutation(BASE, mutation) == MOVES["relu2"].apply(BASE)


def test_a_change_that_cannot_be_separated_stays_bundled_with_its_ancestors():
    parent = MOVES["higher_lr"].apply(BASE)
    child = set_knobs(parent, {"LEARNING_RATE": 0.005}, "cpu")  # edits the line the parent changed
    mutation, bundled = rebase(BASE, parent, child)
    assert bundled and apply_mutation(BASE, mutation) == child


def test_a_stack_is_the_baseline_with_every_atom_merged_in():
    atoms = _catalog("rope", "relu2", "bigram_embedding", "wsd_schedule")
    names = ["rope", "relu2", "bigram_embedding", "wsd_schedule"]
    mutations = [atoms.by_name[n].mutation for n in sorted(names)]
    combined = mutations[0]
    for mutation in mutations[1:]:
        combined = merge(BASE, combined, mutation)
    assert atoms.source(names) == apply_mutation(BASE, combined)
    assert atoms.source([]) == BASE


def test_conflicting_atoms_and_levels_of_one_knob_cannot_share_a_stack():
    atoms = _catalog("smaller_batch", "bigger_batch", "rope")
    assert not atoms.compatible("smaller_batch", "bigger_batch")
    assert atoms.compatible("smaller_batch", "rope")
    lr = next(k for k in extract_knobs(BASE, "cpu") if k.name == "LEARNING_RATE")
    for value in (0.002, 0.003):
        atoms.add(knob_atom(BASE, "cpu", lr, value))
    assert not atoms.compatible("knob:LEARNING_RATE=0.002", "knob:LEARNING_RATE=0.003")
    assert not atoms.feasible(["smaller_batch", "bigger_batch"])


def test_an_atom_built_on_another_carries_it_and_requires_it():
    atoms = _catalog("muon")
    with_muon = MOVES["muon"].apply(BASE)
    mutation, _ = rebase(BASE, with_muon, MOVES["muon_momentum_warmup"].apply(with_muon))
    atoms.add(Atom("warmup", mutation, "catalog", requires=("muon",)))
    assert atoms.closure(["warmup"]) == {"warmup", "muon"}
    assert not atoms.feasible(["warmup"]) and atoms.feasible(["warmup", "muon"])
    stacked = atoms.source(["warmup", "muon"])
    assert {"MUON_LR", "MUON_MOMENTUM", "MUON_WARMUP_FRACTION"} <= {k.name for k in extract_knobs(stacked, "cpu")}
    compile(stacked, "train.py", "exec")


def test_knob_levels_are_the_edits_the_structural_diff_would_find():
    for atom, _ in knob_atoms(BASE, "cpu")[::7]:
        knob, value = atom.name.removeprefix("knob:").split("=")
        source = apply_mutation(BASE, atom.mutation)
        assert structural_diff(BASE, source).key == atom.mutation.key
        assert next(k.default for k in extract_knobs(source, "cpu") if k.name == knob) == pytest.approx(float(value))


def test_the_knob_grid_spaces_rates_by_a_constant_ratio_and_keeps_sizes_on_their_step():
    knobs = {k.name: k for k in extract_knobs(BASE, "cpu")}
    rates = knob_grid(knobs["LEARNING_RATE"])
    ratios = [b[0] / a[0] for a, b in zip(rates, rates[1:]) if a[0] < 1e-3 < b[0] or a[0] >= 1e-3 or b[0] < 1e-3]
    assert len(rates) == 12 and all(r == pytest.approx(3 ** 0.25, rel=0.01) for r in ratios if r < 1.5)
    assert all(pos == pytest.approx(math.log(v / 1e-3), abs=0.01) for v, pos in rates)
    widths = [v for v, _ in knob_grid(knobs["WIDTH"])]
    assert all(v % 32 == 0 and 64 <= v <= 256 for v in widths) and 128 not in widths
    warmup = [v for v, _ in knob_grid(knobs["WARMUP_FRACTION"])]
    assert 0.0 in warmup and all(0 <= v <= 0.4 for v in warmup)
    assert knob_grid(knobs["COMPILE"]) == []
    heads = {a.name for a, _ in knob_atoms(BASE, "cpu") if a.group == "knob:HEADS"}
    assert heads == {"knob:HEADS=2", "knob:HEADS=8"}  # the others do not divide WIDTH (128)
    with pytest.raises(Exception):
        set_knobs(BASE, {"HEADS": 3}, "cpu")


def _effects(values: dict[str, float], pairs: dict[tuple[str, str], float] | None = None) -> Effects:
    names = tuple(values)
    matrix = np.zeros((len(names), len(names)))
    for (a, b), value in (pairs or {}).items():
        i, j = names.index(a), names.index(b)
        matrix[i, j] = matrix[j, i] = value
    return Effects(names, np.array([values[n] for n in names]), matrix)


def test_the_best_stack_takes_every_helpful_atom_that_can_go_together():
    atoms = _catalog("rope", "smaller_batch", "bigger_batch", "relu2")
    effects = _effects({"rope": -0.3, "smaller_batch": -0.1, "bigger_batch": -0.2, "relu2": 0.05})
    assert best_stack(effects, atoms.by_name, atoms) == {"rope", "bigger_batch"}  # the better of the conflicting two
    assert best_stack(effects, atoms.by_name, atoms, forbidden=[frozenset({"rope", "bigger_batch"})]) != \
        {"rope", "bigger_batch"}


def test_an_interaction_can_keep_two_good_atoms_apart():
    atoms = _catalog("rope", "relu2")
    effects = _effects({"rope": -0.3, "relu2": -0.1}, {("rope", "relu2"): 0.2})
    assert best_stack(effects, atoms.by_name, atoms) == {"rope"}


def test_flips_are_one_atom_away_and_feasible():
    atoms = _catalog("rope", "smaller_batch", "bigger_batch")
    neighbours = flips(frozenset({"rope"}), atoms.by_name, atoms)
    assert frozenset() in neighbours and frozenset({"rope", "smaller_batch"}) in neighbours
    assert all(len(n ^ {"rope"}) == 1 for n in neighbours)
    assert frozenset({"smaller_batch", "bigger_batch"}) not in flips(frozenset({"smaller_batch"}), atoms.by_name,
                                                                     atoms)
