"""The analysis API on a real finished run (conftest's finished_run) and on a store filled by hand.

Every table must have its documented columns, and its numbers must agree with what can be
recomputed by hand from `run.evaluations` and with what the combine step stored.
"""
from __future__ import annotations

import math

import pandas as pd
import pytest

import analysis
from analysis import COLUMNS
from population.store import DATABASE, Store
from search.config import EvolveConfig
from trainer.errors import UserError
from trainer.result import EvalResult, Status


@pytest.fixture(scope="module")
def run(finished_run):
    return analysis.load(finished_run)


def top_scores(run: analysis.Run) -> pd.DataFrame:
    """seed x variant val_bpb at the top rung's budget (every seed: the rung's, re-checks', extra ablation seeds),
    straight from the evaluations table."""
    top = run.ladder.top
    e = run.evaluations
    kept = e[(e["budget"] == top.label) & (e["split"] == "val") & (e["status"] == "ok")]
    return kept.pivot(index="seed", columns="variant", values="val_bpb")


# ---------------------------------------------------------------- shape and documentation
@pytest.mark.parametrize("table", list(COLUMNS))
def test_every_table_has_its_documented_columns(run, table):
    frame = getattr(run, table)
    assert list(frame.columns) == list(COLUMNS[table])
    doc = getattr(analysis.Run, table).__doc__
    assert all(f"    {column} " in doc for column in COLUMNS[table])


@pytest.mark.parametrize("table", list(COLUMNS))
def test_every_table_exports_to_csv(run, table, tmp_path):
    frame = getattr(run, table)
    frame.to_csv(tmp_path / "t.csv", index=False)
    back = pd.read_csv(tmp_path / "t.csv")
    assert list(back.columns) == list(COLUMNS[table]) and len(back) == len(frame)


def test_tables_render_as_markdown(run):
    pytest.importorskip("tabulate")  # pandas' to_markdown needs it; not a dependency of evotrain
    for table in COLUMNS:
        assert getattr(run, table).to_markdown().count("\n") >= 1


def test_a_finished_run_has_rows_in_its_main_tables(run):
    for table in ("evaluations", "variants", "lineage", "decisions", "ablation", "fidelity", "cost", "test"):
        assert len(getattr(run, table)) > 0, table


# ---------------------------------------------------------------- consistent numbers
def test_ablation_is_recomputed_from_the_evaluations(run):
    scores = top_scores(run)
    ablation = run.ablation
    assert list(ablation["atom"]) == run.result["members"]
    for row in ablation.itertuples():
        add_one = (scores[row.alone] - scores[run.baseline_id]).dropna()
        leave_one_out = (scores[run.stack_id] - scores[row.without]).dropna()
        assert row.add_one_mean == pytest.approx(add_one.mean(), abs=1e-12) and row.add_one_n == len(add_one)
        assert row.leave_one_out_mean == pytest.approx(leave_one_out.mean(), abs=1e-12)
        assert row.leave_one_out_n == len(leave_one_out)


def test_ablation_matches_what_the_combine_step_stored(run):
    stored = {row["atom"]: row for row in run.result["ablation"]}
    for row in run.ablation.itertuples():
        assert row.add_one_mean == pytest.approx(stored[row.atom]["add_one"]["mean"], abs=1e-12)
        assert row.leave_one_out_mean == pytest.approx(stored[row.atom]["leave_one_out"]["mean"], abs=1e-12)


def test_interaction_is_leave_one_out_minus_add_one(run):
    scores = top_scores(run)
    for row in run.ablation.itertuples():
        shared = scores[[row.alone, run.baseline_id, run.stack_id, row.without]].dropna()
        per_seed = (shared[run.stack_id] - shared[row.without]) - (shared[row.alone] - shared[run.baseline_id])
        assert row.interaction_n == len(shared) <= min(row.add_one_n, row.leave_one_out_n)
        assert row.interaction_mean == pytest.approx(per_seed.mean(), abs=1e-12)


def test_stack_total_is_reported_beside_the_sum_of_add_one(run):
    total = run.stack_total()
    assert total["sum_add_one"] == pytest.approx(run.ablation["add_one_mean"].sum(), abs=1e-12)
    assert total["total"] == pytest.approx(run.result["val_delta"]["mean"], abs=1e-12)
    assert total["interaction"] == pytest.approx(total["total"] - total["sum_add_one"], abs=1e-12)
    assert total["members"] == len(run.ablation) and total["stack"] == run.stack_id


def test_test_deltas_average_to_the_test_result(run):
    test, result = run.test, run.test_result
    assert result["n"] == len(test) == run.options["test_seeds"]
    assert test["delta"].mean() == pytest.approx(result["mean"], abs=1e-12)
    assert (test["delta"] == test["stack_val_bpb"] - test["baseline_val_bpb"]).all()
    assert result["mean"] == pytest.approx(run.result["test_delta"]["mean"], abs=1e-12)


def test_population_is_the_baseline_and_accepted_variants_not_retired(run):
    decisions = run.decisions
    last = decisions[decisions["kind"].isin(["accepted", "retired", "dropped"])].groupby("variant")["kind"].last()
    expected = set(last[last == "accepted"].index)
    variants = run.variants
    assert set(variants.loc[variants["in_population"], "id"]) == expected
    dropped = set(decisions.loc[decisions["kind"] == "dropped", "variant"])
    assert run.baseline_id in expected | dropped  # the baseline leaves only for better members


def test_variants_compare_with_the_baseline_on_the_top_rung(run):
    scores = top_scores(run)
    variants = run.variants.set_index("id")
    stack = variants.loc[run.stack_id]
    assert stack["delta"] == pytest.approx((scores[run.stack_id] - scores[run.baseline_id]).mean(), abs=1e-12)
    assert stack["top_val_bpb"] == pytest.approx(scores[run.stack_id].mean(), abs=1e-12)
    counts = run.evaluations["variant"].value_counts()
    assert (variants["evaluations"] == counts.reindex(variants.index, fill_value=0)).all()


def test_lineage_has_one_edge_per_parent(run):
    assert len(run.lineage) == run.variants["parents"].map(len).sum()
    assert set(run.lineage["role"]) <= {"parent", "merged"}


def test_fidelity_counts_its_points(run):
    points = run.fidelity_points
    for row in run.fidelity.itertuples():
        assert row.n == len(points[(points["low"] == row.low) & (points["high"] == row.high)])
    assert [(r.low, r.high) for r in run.fidelity.itertuples()] == \
        [(a.label, b.label) for a, b in zip(run.ladder.rungs, run.ladder.rungs[1:])]


def test_cost_accounts_for_every_evaluation(run):
    cost = run.cost
    assert cost["evaluations"].sum() == len(run.evaluations)
    assert cost["compute_seconds"].sum() == pytest.approx(run.evaluations["wall_seconds"].sum())
    assert {"smoke", "rung 0", "test"} <= set(cost["purpose"])
    assert run.llm_cost == 0.0 and run.llm_usage["calls"] == 0  # the catalog mutator spends nothing


def test_evaluation_purposes_follow_the_ladder(run):
    e = run.evaluations
    labels = [rung.label for rung in run.ladder.rungs]
    rungs = e[e["purpose"].str.startswith("rung ")]
    assert all(labels[r.rung] == r.budget and r.purpose == f"rung {r.rung}" for r in rungs.itertuples())
    assert (e.loc[e["purpose"] == "smoke", "budget"] == "1tok").all()
    assert (e.loc[e["purpose"] == "test", "split"] == "test").all()


def test_knob_importance_sums_to_one_per_study(run):
    importance = run.knob_importance
    assert (importance["n_trials"] >= 2).all()
    for _, study in importance.groupby("study"):
        assert study["importance"].sum() == pytest.approx(1.0) or study["importance"].sum() == 0


def test_summary_and_reprs_show_the_headline(run):
    summary = run.summary()
    assert summary["phase"] == "done" and summary["stack"] == run.stack_id
    assert summary["test_delta"] == run.test_result["mean"]
    text = repr(run)
    assert "phase done" in text and all(f"{table} " in text for table in COLUMNS)
    assert "<table>" in run._repr_html_() and "run.ablation" in run._repr_html_()


def test_source_of_a_variant(run, finished_run):
    assert run.source(run.stack_id) == (finished_run / "best_train.py").read_text()
    with pytest.raises(UserError, match="no variant"):
        run.source("nope")


# ---------------------------------------------------------------- loading
def test_load_by_url_reads_the_same_run(run, finished_run):
    by_url = analysis.load(f"sqlite:///{finished_run / DATABASE}")
    for table in ("evaluations", "variants", "decisions", "ablation", "fidelity", "cost", "test"):
        pd.testing.assert_frame_equal(getattr(by_url, table), getattr(run, table))
    assert by_url.run_dir == finished_run  # from the stored options, for llm.jsonl
    assert {k: v for k, v in by_url.summary().items() if k != "run"} == \
        {k: v for k, v in run.summary().items() if k != "run"}


def test_load_refuses_a_folder_without_a_store(tmp_path):
    with pytest.raises(UserError) as error:
        analysis.load(tmp_path)
    assert "holds no run store" in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / DATABASE).exists()


@pytest.mark.parametrize("target", ["missing-dir", "sqlite:///{tmp}/missing.db", "{tmp}/not-a-db.txt"])
def test_load_refuses_what_is_not_a_run_in_one_line(tmp_path, target):
    (tmp_path / "not-a-db.txt").write_text("hello")
    with pytest.raises(UserError) as error:
        analysis.load(target.format(tmp=tmp_path) if "{tmp}" in target else tmp_path / target)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "missing.db").exists()


def test_load_refuses_a_store_where_no_search_started(tmp_path):
    Store.in_run_dir(tmp_path).close()
    with pytest.raises(UserError, match="no search was started"):
        analysis.load(tmp_path)


# ---------------------------------------------------------------- arithmetic on a store filled by hand
TOP = "8k"
SCORES = {  # val_bpb at the top rung on seeds 0, 1, 2
    "base": (5.0, 5.2, 4.9),
    "a": (4.8, 5.1, 4.6),     # a - base: -0.2, -0.1, -0.3
    "b": (4.9, 5.0, 4.85),    # b - base: -0.1, -0.2, -0.05
    "ab": (4.5, 4.95, 4.4),   # ab - b: -0.4, -0.05, -0.45; ab - a: -0.3, -0.15, -0.2
}


def _evaluate(store: Store, variant: str, budget: str, seed: int, val_bpb: float | None, split: str = "val",
              status: Status = Status.OK) -> None:
    evaluation = store.begin_evaluation(variant, budget, seed, split)
    store.finish_evaluation(evaluation, EvalResult(status=status, val_bpb=val_bpb, wall_seconds=2.0,
                                                   training_seconds=1.0))


@pytest.fixture
def hand_run(tmp_path):
    store = Store.in_run_dir(tmp_path)
    store.set_meta("options", EvolveConfig(run_dir=tmp_path, budget=TOP, fractions=(0.5, 1.0), seeds=(1, 3)).to_dict())
    ids = {"base": store.add_variant("base", origin="baseline")[0].id}
    for name in ("a", "b"):
        ids[name] = store.add_variant(name, parents=(ids["base"],), origin=f"catalog:{name}")[0].id
    ids["ab"] = store.add_variant("ab", parents=(ids["a"],), origin="stack")[0].id
    store.set_meta("baseline", {"id": ids["base"]})
    for name, values in SCORES.items():
        for seed, value in enumerate(values):
            _evaluate(store, ids[name], TOP, seed, value)
    _evaluate(store, ids["a"], TOP, 100, 1.0)                       # a re-check seed: not a top-rung seed
    _evaluate(store, ids["b"], "4k", 0, None, status=Status.CRASH)  # a failure at rung 0
    _evaluate(store, ids["a"], "1tok", 0, 9.0)                      # a smoke run
    for seed, (stack, base) in enumerate([(4.4, 5.0), (4.6, 5.1)], 1000):
        _evaluate(store, ids["ab"], TOP, seed, stack, split="test")
        _evaluate(store, ids["base"], TOP, seed, base, split="test")
    rows = [{"atom": "a#1", "alone": ids["a"], "without": ids["b"], "estimate": -0.2},
            {"atom": "b#2", "alone": ids["b"], "without": ids["a"], "estimate": -0.1}]
    store.set_meta("result", {"stack": ids["ab"], "members": ["a#1", "b#2"], "ablation": rows})
    store.close()
    return analysis.load(tmp_path)


def test_ablation_arithmetic_by_hand(hand_run):
    a, b = hand_run.ablation.itertuples()
    assert (a.add_one_mean, a.leave_one_out_mean, a.interaction_mean) == pytest.approx((-0.2, -0.3, -0.1))
    assert (b.add_one_mean, b.leave_one_out_mean) == pytest.approx((-0.35 / 3, -0.65 / 3))
    assert b.interaction_mean == pytest.approx(-0.65 / 3 + 0.35 / 3)
    assert a.add_one_n == a.leave_one_out_n == a.interaction_n == 3
    # a - base differences -0.2, -0.1, -0.3: sd 0.1, t(0.975, 2) = 4.303
    half = 4.302652729911275 * 0.1 / math.sqrt(3)
    assert (a.add_one_ci_low, a.add_one_ci_high) == pytest.approx((-0.2 - half, -0.2 + half))
    total = hand_run.stack_total()
    assert total["total"] == pytest.approx(-1.25 / 3)
    assert total["sum_add_one"] == pytest.approx(-0.2 - 0.35 / 3)
    assert total["interaction"] == pytest.approx(-1.25 / 3 + 0.2 + 0.35 / 3)


def test_held_out_test_by_hand(hand_run):
    assert list(hand_run.test["delta"]) == pytest.approx([-0.6, -0.5])
    assert hand_run.test_result["mean"] == pytest.approx(-0.55) and hand_run.test_result["n"] == 2


def test_purposes_and_cost_by_hand(hand_run):
    purpose = {(r.budget, r.seed, r.split): r.purpose for r in hand_run.evaluations.itertuples()}
    assert purpose[(TOP, 100, "val")] == "recheck" and purpose[(TOP, 2, "val")] == "rung 1"
    assert purpose[("1tok", 0, "val")] == "smoke" and purpose[(TOP, 1000, "test")] == "test"
    cost = hand_run.cost.set_index("purpose")
    assert list(cost.index) == ["smoke", "rung 0", "rung 1", "recheck", "test"]
    assert cost.loc["rung 0", "failed"] == 1 and cost.loc["rung 1", "evaluations"] == 12
    assert cost["compute_seconds"].sum() == pytest.approx(2.0 * len(hand_run.evaluations))


def test_top_val_bpb_ignores_seeds_off_the_rung(hand_run):
    variants = hand_run.variants.set_index("origin")
    assert variants.loc["catalog:a", "top_val_bpb"] == pytest.approx(sum(SCORES["a"]) / 3)
    assert variants.loc["catalog:a", "state"] == "pending"
    assert not variants["in_population"].any()  # no decisions were stored
    assert hand_run.knob_importance.empty and list(hand_run.knob_importance.columns) == \
        list(COLUMNS["knob_importance"])
