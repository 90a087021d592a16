"""The search-efficiency benchmark's parts: the synthetic task with known ground truth, the
strategies it compares, and `search evolve` driven on it through an injected executor."""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import search_efficiency  # noqa: E402
import strategies  # noqa: E402
import synthetic_task as synthetic  # noqa: E402
from mutations.sources import ProposalRequest  # noqa: E402
from mutations.validation import validate_mutation, validate_source  # noqa: E402
from population.store import Store  # noqa: E402


@pytest.fixture(scope="module")
def task() -> synthetic.SyntheticTask:
    return synthetic.make_task(seed=1, noise=0.004)


def test_standin_is_a_valid_train_py_whose_phenotype_is_read_back(task):
    source = synthetic.standin_source(task)
    assert validate_source(source).ok
    on, knobs = synthetic.phenotype(synthetic.switch_on(source, "feature_05"))
    assert on == {5}
    assert knobs == {name: truth.default for name, truth in synthetic.KNOBS.items()}
    with pytest.raises(ValueError, match="already on"):
        synthetic.switch_on(synthetic.switch_on(source, "feature_05"), "feature_05")


def test_source_proposals_pass_static_validation_and_are_never_repeated(task):
    source = synthetic.standin_source(task)
    mutator = synthetic.SyntheticSource(task, seed=0)
    first = mutator.propose(ProposalRequest(source)).mutation
    second = mutator.propose(ProposalRequest(source, tried=frozenset({first.key}))).mutation
    assert first.key != second.key
    _, verdict = validate_mutation(source, first)
    assert verdict.ok


def test_noise_is_deterministic_per_seed_and_cancels_in_paired_differences(task):
    base = synthetic.standin_source(task)
    child = synthetic.switch_on(base, "feature_00")
    assert task.observed(child, 1.0, 3, "val") == task.observed(child, 1.0, 3, "val")
    assert task.observed(child, 1.0, 3, "val") != task.observed(child, 1.0, 4, "val")
    seeds = range(200)
    raw = [task.observed(base, 1.0, s, "val") for s in seeds]
    differences = [task.observed(child, 1.0, s, "val") - task.observed(base, 1.0, s, "val") for s in seeds]
    assert statistics.stdev(differences) < statistics.stdev(raw)  # the per-seed part is shared
    assert statistics.mean(differences) == pytest.approx(task.effects[0], abs=0.002)


def test_ground_truth_optimum_and_good_moves(task):
    best = task.best_features()
    optimum = {name: truth.optimum for name, truth in synthetic.KNOBS.items()}
    assert task.optimum() == task.score(best, optimum)
    assert task.optimum() < task.score(frozenset(), {})
    for index in range(task.features):  # no single flip improves on the optimum
        assert task.score(best ^ {index}, optimum) >= task.optimum()
    assert task.good() and all(task.effects[i] <= -0.01 for i in task.good())
    slow = [i for i, h in enumerate(task.horizon) if h > 0]
    assert all(task.score({i}, {}, 0.25) - task.score(set(), {}, 0.25) > task.effects[i] for i in slow)


def test_strategies_stay_within_the_compute_and_keep_only_what_measured_better(task):
    problem = search_efficiency.synthetic_problem(task)
    share = 10 * problem.run_tokens
    greedy = strategies.greedy(problem, share, seed=0)
    assert greedy.tokens <= share and greedy.evaluations == 10
    on, _ = synthetic.phenotype(greedy.source)
    assert {f"feature_{i:02d}" for i in on} == set(greedy.kept)
    for name, without in greedy.kept.items():
        assert without is not None and name not in {f"feature_{i:02d}" for i in synthetic.phenotype(without)[0]}
    tuned = strategies.optuna_knobs(problem, share, seed=0)
    assert tuned.tokens <= share
    assert synthetic.phenotype(tuned.source)[0] == frozenset()  # knobs only, no code changes
    assert set(tuned.kept) <= set(synthetic.KNOBS)
    stacks = strategies.random_stacks(problem, share, seed=0)
    assert stacks.tokens <= share and stacks.evaluations <= 10


def test_held_out_runs_are_saved_as_they_finish_and_never_rerun_after_a_restart(task, tmp_path):
    problem = search_efficiency.synthetic_problem(task)
    ledger = tmp_path / "test_runs.jsonl"
    variant = synthetic.switch_on(problem.baseline, "feature_03")
    first = search_efficiency.Measurements(problem, seeds=3, ledger=ledger, batch=2)
    first.run([problem.baseline, variant])
    assert len(ledger.read_text().splitlines()) == 6

    def must_not_run(jobs):
        raise AssertionError(f"reran {len(jobs)} finished runs")

    restarted = search_efficiency.Measurements(
        search_efficiency.Problem(problem.baseline, problem.moves, problem.budget, must_not_run), seeds=3, ledger=ledger)
    restarted.run([problem.baseline, variant])
    assert restarted.delta(variant, problem.baseline).mean == first.delta(variant, problem.baseline).mean

    # reporting from the ledger alone: a leave-one-out that never ran is shown as not measured, not as 0
    offline = search_efficiency.Measurements(restarted.problem, seeds=3, ledger=ledger, offline=True)
    unmeasured = synthetic.switch_on(variant, "feature_05")
    outcome = strategies.Outcome("greedy", unmeasured, {"feature_05": variant,
                                                        "feature_03": synthetic.switch_on(problem.baseline, "feature_05")})
    row = search_efficiency.measured_row(outcome, offline, problem.baseline)
    assert row["false_keeps"] == "" and row["false_kept"] == "(not all runs finished)" and row["test_n"] == 0


def test_evolve_on_the_synthetic_task_finds_good_moves_and_keeps_no_harmful_one(task, tmp_path):
    outcome = search_efficiency.synthetic_evolve(task, children=24, seed=0, work=tmp_path)
    truth = search_efficiency.truth_row(task, outcome, synthetic.standin_source(task))
    assert truth["true_delta"] < -0.1
    assert truth["recall"] >= 0.5
    assert truth["true_false_moves"] == 0
    assert truth["knob_harm"] < 0.005  # a knob trial moves up to 3 knobs: small hitchhikers may ride along
    assert outcome.tokens > 0 and outcome.kept

    store = Store.in_run_dir(tmp_path / "evolve")
    rejected_low = {d.variant_id for d in store.decisions() if d.kind == "rejected" and d.rung == 0}
    store.close()
    assert rejected_low  # the run below relies on rejections at the lowest rung


def test_a_rungs_quota_counts_rejected_completions_live_and_after_resume(task, tmp_path):
    """ASHA promotes the best 1/eta of everything that completed a rung: a child rejected there
    still counts, so one good child among many rejected ones is promoted without waiting."""
    from search.config import EvolveConfig
    from search.evolve import Evolution
    from search.progress import NullReporter

    baseline = tmp_path / "standin.py"
    baseline.write_text(synthetic.standin_source(task))
    config = EvolveConfig(run_dir=tmp_path / "run", baseline=baseline, baseline_hash="standin", budget="300k",
                          device="cpu", device_kind="cpu", workers=2, population=4, generations=3, time_limit=None)
    live = Evolution(config, NullReporter(), source=synthetic.SyntheticSource(task),
                     executor=synthetic.SyntheticExecutor(task))
    live.run()
    store = Store.in_run_dir(config.run_dir)
    low = live.ladder.rungs[0]
    completed = {e.variant_id for e in store.evaluations() if e.budget == str(low.budget) and e.split == "val"}
    store.close()
    completed.discard(live.baseline.id)
    assert live.asha.occupancy()[0] == len(completed) > 0

    resumed = Evolution(config, NullReporter(), source=synthetic.SyntheticSource(task),
                        executor=synthetic.SyntheticExecutor(task))
    resumed._open()
    resumed._restore()
    resumed.store.close()
    assert resumed.asha.occupancy()[0] == len(completed)
