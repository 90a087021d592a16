"""The search's pure parts: successive halving, the ladder, resume checks, early stopping, knob studies."""
from __future__ import annotations

import pytest
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState

from mutations.knobs import extract_knobs
from search.config import EvolveConfig, check_resume, parse_counts, parse_fractions
from search.evaluator import PruneRule, prune_rule
from search.knob_tuning import KnobTuner, local_space
from population.ladder import Ladder
from search.scheduler import Asha
from trainer.budget import Budget
from trainer.errors import UserError
from trainer.result import CurvePoint, EvalResult, Status

SOURCE = """\
LEARNING_RATE = 1e-3
WIDTH = 128
HEADS = 4  # must divide WIDTH
WARMUP_FRACTION = 0.1
COMPILE = True
"""


# ---------------------------------------------------------------- successive halving
def test_the_best_third_of_a_rung_is_promoted_as_results_arrive():
    asha = Asha(rungs=3, eta=3)
    asha.record(0, "a", -0.10)
    asha.record(0, "b", -0.05)
    assert asha.promotions() == []          # 2 results: the best third is nobody yet
    asha.record(0, "c", -0.01)
    assert asha.promotions() == [("a", 1)]  # 3 results: the best one goes up
    assert asha.promotions() == []          # once
    for name, score in (("d", -0.2), ("e", 0.1), ("f", -0.03)):
        asha.record(0, name, score)
    assert asha.promotions() == [("d", 1)]  # 6 results: the best two are a and d
    assert asha.occupancy() == [6, 0, 0]


def test_a_candidate_no_better_than_its_parent_is_never_promoted():
    asha = Asha(rungs=2, eta=2)
    asha.record(0, "a", 0.0)
    asha.record(0, "b", 0.3)
    assert asha.promotions() == []


def test_closed_candidates_keep_their_place_in_the_ranking_but_do_not_move():
    asha = Asha(rungs=2, eta=2)
    asha.record(0, "a", -0.5)
    asha.close("a")
    asha.record(0, "b", -0.1)
    assert asha.promotions() == []          # k = 1 and the best is closed
    assert asha.waiting() == ["b"]


def test_when_no_more_candidates_come_the_best_of_a_small_rung_still_goes_up():
    asha = Asha(rungs=3, eta=3)
    asha.record(0, "a", -0.5)
    asha.record(0, "b", -0.1)
    assert asha.promotions() == []                        # floor(2/3) = 0: waiting for competitors
    assert asha.promotions(draining=True) == [("a", 1)]   # ceil(2/3) = 1
    asha.record(0, "c", 0.2)
    assert asha.promotions(draining=True) == []           # b is second of three, c no better than its parent


def test_promotions_restored_from_the_store_are_not_repeated():
    asha = Asha(rungs=2, eta=2)
    asha.mark_promoted(0, "a")
    asha.record(0, "a", -0.5)
    asha.record(0, "b", -0.1)
    assert asha.promotions() == []


# ---------------------------------------------------------------- ladder
def test_rungs_share_their_seeds_so_every_comparison_is_paired():
    ladder = Ladder.build(Budget.parse("300k"), parse_fractions("1/9,1/3,1"), parse_counts("1,2,3"), eta=3)
    assert [r.label for r in ladder.rungs] == ["33.333k", "100k", "300k"]
    assert [r.seeds for r in ladder.rungs] == [(0,), (0, 1), (0, 1, 2)]
    assert set(ladder.recheck_seeds(0, 2)).isdisjoint(ladder.top.seeds)
    assert set(ladder.test_seeds(3)).isdisjoint(ladder.recheck_seeds(0, 50))
    assert ladder.rung_of("100k") is ladder.rungs[1]


@pytest.mark.parametrize("fractions, seeds, eta, message", [
    ("1/9,1/3", "1,2,3", 3, "one seed count per rung"),
    ("1/3,1/9,1", "1,2,3", 3, "must increase"),
    ("1/9,1/3,1/2", "1,2,3", 3, "end at 1"),
    ("1/9,1/3,1", "2,1,3", 3, "never decrease"),
    ("1/9,1/3,1", "1,2,3", 1, "eta must be at least 2"),
])
def test_a_bad_ladder_is_one_clear_error(fractions, seeds, eta, message):
    with pytest.raises(UserError, match=message):
        Ladder.build(Budget.parse("300k"), parse_fractions(fractions), parse_counts(seeds), eta)


def test_unreadable_fractions_and_counts_say_how_to_write_them():
    with pytest.raises(UserError, match="1/4,1/2,1"):
        parse_fractions("a third")
    with pytest.raises(UserError, match="1,2,3"):
        parse_counts("1;2")


# ---------------------------------------------------------------- resume
def test_resuming_with_other_identity_options_is_refused(tmp_path):
    stored = EvolveConfig(run_dir=tmp_path, budget="300k")
    check_resume(stored, EvolveConfig(run_dir=tmp_path, budget="300k", workers=4, time_limit=60))  # fine
    with pytest.raises(UserError, match="budget '300k' -> '600k'"):
        check_resume(stored, EvolveConfig(run_dir=tmp_path, budget="600k"))


def test_config_round_trips_through_the_store_format(tmp_path):
    config = EvolveConfig(run_dir=tmp_path, budget="300k", fractions=(0.25, 1.0), seeds=(1, 3))
    assert EvolveConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("kwargs, message", [
    ({"population": 1}, "--population"), ({"tune_share": 0.7, "merge_share": 0.5}, "must not exceed 1"),
    ({"alpha": 1.5}, "--alpha"), ({"generations": None, "time_limit": None}, "never stop"),
])
def test_bad_options_are_one_line_errors(tmp_path, kwargs, message):
    with pytest.raises(UserError, match=message):
        EvolveConfig(run_dir=tmp_path, **kwargs)


# ---------------------------------------------------------------- early stopping
def test_a_probe_clearly_worse_than_the_parents_at_the_same_point_stops_the_run():
    reference = EvalResult(Status.OK, val_bpb=3.0, curve=(CurvePoint(0.25, 10, 1, 1.0, 4.0),
                                                          CurvePoint(0.5, 20, 2, 2.0, 3.5)))
    rule = prune_rule(reference, margin=0.03)
    assert isinstance(rule, PruneRule)
    assert not rule({"event": "probe", "progress": 0.25, "val_bpb": 9.0})   # too early to judge
    assert not rule({"event": "probe", "progress": 0.5, "val_bpb": 3.6})    # within 3%
    assert rule({"event": "probe", "progress": 0.5, "val_bpb": 3.7})
    assert not rule({"event": "progress", "progress": 0.6})
    assert prune_rule(None, 0.03) is None and prune_rule(reference, 0) is None


# ---------------------------------------------------------------- knob studies
def test_the_knob_space_is_a_neighbourhood_of_the_current_values():
    space = local_space(extract_knobs(SOURCE))
    assert space["LEARNING_RATE"] == FloatDistribution(1e-3 / 3, 3e-3, log=True)
    assert isinstance(space["WIDTH"], IntDistribution) and space["WIDTH"].low < 128 < space["WIDTH"].high
    assert "COMPILE" not in space  # switches are the mutators' business


def test_a_study_starts_from_the_variants_own_values_and_records_pruned_and_complete(tmp_path):
    tuner = KnobTuner(f"sqlite:///{tmp_path / 'db.sqlite'}", seed=1)
    first = tuner.ask("v1", SOURCE)
    assert first[1] == SOURCE  # the enqueued parent values change nothing
    second = tuner.ask("v1", SOURCE)
    assert second[1] != SOURCE and 1 <= len(second[2]) <= 3
    tuner.tell(first[0], TrialState.COMPLETE, 3.5)
    tuner.report(second[0], 0, 3.9)
    tuner.tell(second[0], TrialState.PRUNED)
    tuner.tell(second[0], TrialState.COMPLETE, 1.0)  # a resumed search re-telling it changes nothing
    study = tuner.study("v1", SOURCE)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.PRUNED]
    assert study.trials[1].intermediate_values == {0: 3.9}
    assert study.best_value == 3.5


def test_a_rung_margin_lets_a_child_within_the_noise_climb():
    """With one seed at the lowest rung the parent's own draw can be lucky: a child that looks slightly
    worse but within the rung's measured noise may still be promoted; one beyond it never is."""
    asha = Asha(rungs=2, eta=2, margins=[0.01, 0.0])
    asha.record(0, "within", 0.004)
    asha.record(0, "beyond", 0.02)
    assert asha.promotions(draining=True) == [("within", 1)]
