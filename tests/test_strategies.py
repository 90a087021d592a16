"""Every strategy behind the ask/tell seam, driven by `search evolve`'s driver on the synthetic task (instant
evaluations, real store, real libcst and Optuna): it finishes, its run reads back everywhere, a stopped search
resumes without re-running anything; then what each strategy promises on its own."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import synthetic_task as synthetic  # noqa: E402
from population.store import DecisionKind, Store  # noqa: E402
from search.cli import cli  # noqa: E402
from search.config import EvolveConfig  # noqa: E402
from search.driver import Driver, Stopped  # noqa: E402
from search.progress import NullReporter  # noqa: E402
from search.strategies import STRATEGIES  # noqa: E402
from trainer.budget import Budget, BudgetUnit  # noqa: E402
from trainer.errors import UserError  # noqa: E402

RUNS = 14


@pytest.fixture(scope="module")
def task() -> synthetic.SyntheticTask:
    return synthetic.make_task(seed=3, noise=0.005)


def _config(tmp_path: Path, task: synthetic.SyntheticTask, strategy: str, runs: int = RUNS) -> EvolveConfig:
    baseline = tmp_path / "train.py"
    baseline.write_text(synthetic.standin_source(task))
    return EvolveConfig(run_dir=tmp_path / "run", baseline=baseline, baseline_hash="standin", budget="300k",
                        device="cpu", device_kind="cpu", workers=2, time_limit=None, compute=f"{runs * 300}k",
                        strategy=strategy, test_seeds=2)


def _run(config: EvolveConfig, task: synthetic.SyntheticTask, executor=None, source=None) -> dict:
    return Driver(config, NullReporter(), source=source or synthetic.SyntheticSource(task),
                  executor=executor or synthetic.SyntheticExecutor(task)).run()


def _finished(config: EvolveConfig) -> dict[int, tuple]:
    store = Store(config.storage_url())
    try:
        return {e.id: (e.variant_id, e.budget, e.seed, e.split, e.val_bpb) for e in store.evaluations()
                if e.status != "running"}
    finally:
        store.close()


class _Interrupting(synthetic.SyntheticExecutor):
    """Ctrl-C after `stop_after` results have been collected."""

    def __init__(self, task: synthetic.SyntheticTask, stop_after: int) -> None:
        super().__init__(task)
        self.stop_after, self.collected = stop_after, 0

    def wait(self, timeout: float):
        done = super().wait(timeout)
        self.collected += len(done)
        if self.collected > self.stop_after:
            raise KeyboardInterrupt
        return done


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_every_strategys_run_reads_back_in_status_analysis_report_and_export(strategy, task, tmp_path):
    import analysis
    from analysis.report import write

    config = _config(tmp_path, task, strategy)
    result = _run(config, task)
    store = Store(config.storage_url())
    meta, variants = store.meta(), {v.id: v for v in store.variants()}
    decisions = store.decisions()
    store.close()
    assert meta["phase"] == "done" and meta["snapshot"]["phase"] == "done" and result["strategy"] == strategy
    assert result["stack"] in variants and len(result["ablation"]) == len(result["members"])
    assert any(d.kind == DecisionKind.INCUMBENT for d in decisions)
    run = analysis.load(config.run_dir)
    assert run.summary()["stack"] == result["stack"] and len(run.ablation) == len(result["members"])
    assert len(run.evaluations) == len(_finished(config))
    assert "evotrain report" in write(run, tmp_path / "report.html").read_text()
    status = CliRunner().invoke(cli, ["status", str(config.run_dir), "--format", "json"])
    assert status.exit_code == 0 and json.loads(status.output)["state"] == "finished"
    if result["ablation"]:
        ablate = CliRunner().invoke(cli, ["ablate", str(config.run_dir), "--format", "json"])
        assert ablate.exit_code == 0 and {r["atom"] for r in json.loads(ablate.output)[:-1]} == set(result["members"])
    if result["stack"] != variants[meta["baseline"]["id"]].id:
        assert result["test_delta"]["n"] == 2
        patch = tmp_path / "best.patch"
        exported = CliRunner().invoke(cli, ["export", str(config.run_dir), "-o", str(patch)])
        assert exported.exit_code == 0, exported.output
        work = tmp_path / "apply"
        work.mkdir()
        (work / "train.py").write_text(synthetic.standin_source(task))
        subprocess.run(["git", "apply", str(patch)], cwd=work, check=True)
        assert (work / "train.py").read_text() == variants[result["stack"]].source


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_every_evaluation_and_every_decision_is_a_line_as_it_happens(strategy, task, tmp_path):
    config = _config(tmp_path, task, strategy)
    reporter = NullReporter()
    Driver(config, reporter, source=synthetic.SyntheticSource(task), executor=synthetic.SyntheticExecutor(task)).run()
    store = Store(config.storage_url())
    evaluations, decisions = store.evaluations(), store.decisions()
    store.close()
    lines = reporter.lines
    for e in evaluations:
        assert any(line.startswith(e.variant_id[:8]) and f" seed {e.seed}" in line for line in lines)
    assert sum(" incumbent" in line for line in lines) == sum(d.kind == DecisionKind.INCUMBENT for d in decisions)
    assert len(lines) >= len(evaluations) + len(decisions)


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
@pytest.mark.parametrize("stop_after", [4, 13])
def test_a_stopped_search_resumes_where_it_was_and_reruns_nothing(strategy, stop_after, task, tmp_path):
    config = _config(tmp_path, task, strategy)
    with pytest.raises(Stopped):
        _run(config, task, executor=_Interrupting(task, stop_after))
    before = _finished(config)
    assert before
    _run(config, task)
    after = _finished(config)
    assert {k: after[k] for k in before} == before          # nothing finished was lost or run again
    assert len({v[:4] for v in after.values()}) == len(after)  # and nothing ran twice
    store = Store(config.storage_url())
    assert store.meta()["phase"] == "done"
    store.close()


@pytest.mark.parametrize("strategy", ["additive", "greedy"])
def test_a_compute_limit_in_flops_is_spent_and_not_overrun(strategy, task, tmp_path):
    run = Budget.parse("300k").amount * synthetic.FLOPS_PER_TOKEN
    config = replace(_config(tmp_path, task, strategy), compute=str(Budget(12 * run, BudgetUnit.FLOPS)))
    _run(config, task)
    store = Store(config.storage_url())
    spent = sum(e.result.flops for e in store.evaluations() if e.split == "val")
    store.close()
    assert 11 * run <= spent <= 14 * run  # what was running when the limit came (2 slots) finishes


def test_greedy_runs_one_idea_at_a_time_on_one_seed_and_keeps_what_is_lower(task, tmp_path):
    config = _config(tmp_path, task, "greedy")
    _run(config, task)
    store = Store(config.storage_url())
    evaluations = [e for e in store.evaluations() if e.split == "val"]
    verdicts = {d.variant_id: d for d in store.decisions() if d.kind in (DecisionKind.ACCEPTED, DecisionKind.REJECTED)}
    store.close()
    assert {e.seed for e in evaluations} == {0}
    best = evaluations[0].val_bpb  # the baseline
    for evaluation in evaluations[1:]:
        kind = verdicts[evaluation.variant_id].kind
        assert kind == (DecisionKind.ACCEPTED if evaluation.val_bpb < best else DecisionKind.REJECTED)
        best = min(best, evaluation.val_bpb)


def test_additive_runs_the_full_budget_pairs_seeds_and_answers_from_its_model(task, tmp_path):
    config = _config(tmp_path, task, "additive", runs=20)
    result = _run(config, task)
    store = Store(config.storage_url())
    evaluations = [e for e in store.evaluations() if e.split == "val"]
    meta = store.meta()
    store.close()
    assert evaluations[0].variant_id == meta["baseline"]["id"]        # no noise phase: one baseline run first
    assert {e.budget for e in evaluations} == {"300k"}                  # one full run decides a clear case
    assert {e.seed for e in evaluations} <= {0, 1, 2, 3}               # seeds rotate and pair through the model
    assert 0 < sum(e.purpose == "confirm" for e in evaluations) <= 3    # confirmation runs: at most 15% of compute
    assert sum(e.result.tokens for e in evaluations) <= 20 * 300_000
    assert meta["noise"]["from"] == "the model's residuals and replicates"
    for row in result["ablation"]:
        model = row["model"]
        assert model["p_helps"] >= 0.8 and model["leave_one_out"]["mean"] < 0
    on, _ = synthetic.phenotype(Store(config.storage_url()).variant(result["stack"]).source)
    assert task.good() & on  # it found at least one of the good changes


class _OneAtATime(synthetic.SyntheticSource):
    """An LLM-like source: proposals cost something, so they are asked for one at a time."""

    exhaustive = False


def test_additive_asks_a_one_at_a_time_source_for_new_changes_on_top_of_the_incumbent(task, tmp_path):
    config = _config(tmp_path, task, "additive", runs=16)
    _run(config, task, source=_OneAtATime(task))
    store = Store(config.storage_url())
    proposed = [a for a in store.atoms() if a.origin.startswith("synthetic")]
    store.close()
    assert 2 <= len(proposed) < task.features


def test_tpe_needs_every_change_up_front(task, tmp_path):
    with pytest.raises(UserError, match="every change up front"):
        _run(_config(tmp_path, task, "tpe"), task, source=_OneAtATime(task))


def test_additive_screens_with_short_runs_only_while_they_rank_like_full_ones(task, tmp_path):
    from dataclasses import replace

    config = replace(_config(tmp_path, task, "additive", runs=36), fractions=(0.25, 1.0), seeds=(1, 4))
    reporter = NullReporter()
    Driver(config, reporter, source=synthetic.SyntheticSource(task), executor=synthetic.SyntheticExecutor(task)).run()
    store = Store(config.storage_url())
    screens = [e for e in store.evaluations() if e.purpose == "screen"]
    decisions = store.decisions()
    fidelity = store.meta()["strategy.fidelity"][0]
    store.close()
    assert screens and {e.budget for e in screens} == {"75k"}
    assert any(d.kind == DecisionKind.PROMOTED for d in decisions)
    assert fidelity["low"] == "75k" and fidelity["high"] == "300k" and fidelity["n"] >= 3
    stops = [line for line in reporter.lines if line.startswith("short runs stop")]
    if stops:  # the correlation it stopped on was weak
        assert float(stops[0].split("Spearman ")[1].split(" ")[0]) < 0.6
    else:
        assert fidelity["n"] < 6 or fidelity["spearman"] >= 0.6
