"""The contract every catalog move keeps, run over the whole registry, and every pair of moves."""
from __future__ import annotations

import itertools

import pytest

from mutations.catalog import MOVES, NotApplicable
from mutations.diff import structural_diff
from mutations.edits import apply_mutation
from mutations.knobs import extract_knobs
from mutations.merge import MergeConflict, merge
from mutations.validation import smoke_run, validate_source
from trainer.baselines import BASELINE

BASE = BASELINE.read_text()
CATEGORIES = {"norm", "attention", "mlp", "embedding", "init", "output", "optimizer", "schedule",
              "regularization", "shape", "throughput"}
REQUIRED = {"rmsnorm", "drop_linear_biases", "embed_norm", "relu2", "swiglu", "rope", "qk_norm", "attn_temperature",
            "untied_head", "zero_init_proj", "logit_softcap", "value_residual", "x0_shortcut", "value_embeddings",
            "smear", "bigram_embedding", "muon", "muon_momentum_warmup", "per_group_adam", "wsd_schedule",
            "short_warmup", "adam_eps", "weight_decay_off", "dropout_removal", "deeper", "wider", "more_heads",
            "bigger_batch", "smaller_batch", "fused_ce", "torch_compile", "bf16_autocast"}
ON_BASELINE = [move for move in MOVES.values() if move.targets_baseline]


def prepared(move) -> str:
    """The baseline with the moves this one builds on (e.g. qk_norm before attn_temperature)."""
    source = BASE
    for name in move.requires:
        source = MOVES[name].apply(source)
    return source


def test_the_catalog_covers_the_research_moves():
    assert len(MOVES) >= 25
    assert REQUIRED <= set(MOVES)


@pytest.mark.parametrize("move", MOVES.values(), ids=lambda move: move.name)
def test_every_move_is_described(move):
    assert move.category in CATEGORIES
    assert move.description and "\n" not in move.description
    assert set(move.conflicts_with) <= set(MOVES) and set(move.requires) <= set(MOVES)


@pytest.mark.parametrize("move", ON_BASELINE, ids=lambda move: move.name)
def test_every_move_applies_to_the_baseline_and_passes_validation(move):
    source = prepared(move)
    changed = move.apply(source)
    verdict = validate_source(changed, baseline=source)
    assert verdict.ok, verdict.summary()
    assert {knob.name for knob in extract_knobs(changed)} >= set(move.knobs)
    with pytest.raises(NotApplicable):
        move.apply(changed)


@pytest.mark.parametrize("move", [m for m in MOVES.values() if m.requires], ids=lambda move: move.name)
def test_a_move_that_builds_on_another_says_so_on_the_bare_baseline(move):
    assert not move.check(BASE).applies
    assert any(name in move.check(BASE).reason for name in move.requires)


def _pairs():
    return list(itertools.combinations([m for m in ON_BASELINE if not m.requires], 2))


@pytest.fixture(scope="module")
def mutations():
    return {move.name: structural_diff(BASE, move.apply(BASE), name=move.name) for move in ON_BASELINE
            if not move.requires}


def test_every_pair_of_moves_merges_or_is_declared_conflicting(mutations):
    wrong = []
    for a, b in _pairs():
        declared = b.name in a.conflicts_with or a.name in b.conflicts_with
        try:
            merged = apply_mutation(BASE, merge(BASE, mutations[a.name], mutations[b.name]))
        except MergeConflict as conflict:
            if not declared:
                wrong.append(f"{a.name} + {b.name}: conflict not declared ({conflict})")
            continue
        if declared:
            wrong.append(f"{a.name} + {b.name}: declared conflicting but they merge")
        verdict = validate_source(merged, baseline=BASE)
        if not verdict.ok:
            wrong.append(f"{a.name} + {b.name}: merged source refused: {verdict.summary()}")
    assert not wrong, "\n".join(wrong)


def test_the_stack_of_all_compatible_moves_trains(mutations):
    """Greedy combination of every move that merges: the modern recipe, in one file, for one step."""
    stack = None
    for name, mutation in mutations.items():
        try:
            stack = mutation if stack is None else merge(BASE, stack, mutation)
        except MergeConflict:
            continue
    verdict = smoke_run(apply_mutation(BASE, stack))
    assert verdict.ok, verdict.summary()
