"""`search evolve` end to end on CPU with tiny budgets: real runs, a real store, real Optuna studies.

Each test reads the store afterwards: what a user (and `search status`, and the analysis)
relies on is what was recorded, not the exit code.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import psutil
import pytest

from mutations.diff import structural_diff
from mutations.sources import MutationSource, Proposal, ProposalRequest
from population.store import Store
from search.config import EvolveConfig
from search.driver import Driver
from trainer.baselines import BASELINE

from conftest import TINY_EVOLVE as TINY
from search.progress import NullReporter as Events

BASE = BASELINE.read_text()
# At 8 steps a higher learning rate is worth about one bit per byte, an untied head only hurts.
MOVES = "catalog:higher_lr,bigram_embedding,untied_head"


def _decisions(store: Store) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for d in store.decisions():
        found.setdefault(d.variant_id, []).append(d.kind)
    return found


def test_a_small_evolve_selects_promotes_accepts_combines_ablates_tests_and_exports(finished_run, tmp_path):
    store = Store.in_run_dir(finished_run)
    meta = store.meta()
    config = EvolveConfig.from_dict(meta["options"])
    result = meta["result"]
    variants = {v.id: v for v in store.variants()}
    baseline = next(v for v in variants.values() if v.origin == "baseline")
    evaluations = store.evaluations()
    assert meta["phase"] == "done" and meta["noise"]["n"] == 2 and meta["noise"]["sd"] >= 0
    assert meta["ladder"]["budgets"] == ["4k", "8k", "16k"] and result["strategy"] == "asha"
    assert not [e for e in evaluations if e.status == "running"]
    # the baseline ran on every rung's seeds: every child's comparison is paired
    assert {(e.budget, e.seed) for e in evaluations if e.variant_id == baseline.id and e.split == "val"} >= \
        {("4k", 0), ("8k", 0), ("8k", 1), ("16k", 0), ("16k", 1)}
    decisions = _decisions(store)
    accepted = [v for v, kinds in decisions.items() if "accepted" in kinds and v != baseline.id]
    assert accepted
    assert any("promoted" in kinds for kinds in decisions.values())
    for variant in accepted:
        decision = next(d for d in store.decisions(variant) if d.kind == "accepted")
        assert decision.detail["paired"]["p_better"] < config.alpha and decision.detail["paired"]["n"] == 2
    assert not any("accepted" in decisions[v] for v in variants if variants[v].origin == "catalog:untied_head")
    assert {v.origin for v in variants.values()} >= {"baseline", "catalog:higher_lr", "tune"}
    assert len({v.source for v in variants.values()}) == len(variants)  # no duplicate was stored
    # Optuna: the stack's knob study lives in the same database
    studies = {s.study_name: s for s in optuna.get_all_study_summaries(config.storage_url())}
    linked = store.trials()
    assert linked and {study for study, _ in linked.values()} <= set(studies)
    states = {t.state.name for name in studies for t in optuna.load_study(study_name=name,
                                                                          storage=config.storage_url()).trials}
    assert "COMPLETE" in states and "RUNNING" not in states
    # combine, ablation, held-out test, export
    assert result["members"] and len(result["ablation"]) == len(result["members"])
    for row in result["ablation"]:
        assert row["add_one"]["n"] >= 2 and row["leave_one_out"]["n"] >= 2  # re-check seeds count too
    assert result["test_delta"]["n"] == 2 and result["test_delta"]["mean"] < 0
    assert {e.split for e in evaluations if e.variant_id == result["stack"]} == {"val", "test"}
    assert meta["strategy.fidelity"] and meta["strategy.fidelity"][0]["n"] >= 2
    assert meta["snapshot"]["phase"] == "done"
    stack = variants[result["stack"]]
    work = tmp_path / "apply"
    work.mkdir()
    (work / "train.py").write_text(BASE)
    subprocess.run(["git", "apply", str(Path(result["files"]["patch"]))], cwd=work, check=True)
    assert (work / "train.py").read_text() == stack.source == Path(result["files"]["source"]).read_text()


class _Scripted(MutationSource):
    """Proposes fixed children in order, repeating each once to check duplicates are never re-run."""

    name = "scripted"

    def __init__(self, sources: list[tuple[str, str]]) -> None:
        self._queue = [item for item in sources for _ in range(2)]

    def propose(self, request: ProposalRequest) -> Proposal:
        name, source = self._queue.pop(0) if self._queue else ("scripted:same", BASE.replace("0.1", "0.15", 1))
        return Proposal(structural_diff(request.parent_source, source, name=f"scripted:{name}"))


def _broken_children() -> list[tuple[str, str]]:
    step = "    runtime.step(model, loss)\n"
    assert step in BASE
    crash = BASE.replace(step, step + "    if 0.3 < runtime.progress() < 0.99:\n        raise RuntimeError('boom')\n")
    hang = BASE.replace("import math\n", "import math\nimport time\n").replace(
        step, step + "    if 0.3 < runtime.progress() < 0.99:\n        time.sleep(600)\n")
    leak = BASE.replace("is_causal=True", "is_causal=False")
    return [("crash", crash), ("hang", hang), ("leak", leak)]


def test_crashed_timed_out_and_leaking_children_are_recorded_and_never_join(tmp_path):
    config = EvolveConfig(run_dir=tmp_path / "run", generations=1, tune_share=0.0, merge_share=0.0, timeout=40,
                          **{**TINY, "stack_trials": 0})
    events = Events()
    Driver(config, events, source=_Scripted(_broken_children())).run()

    store = Store(config.storage_url())
    by_origin = {v.origin: v for v in store.variants()}
    statuses = {origin: {e.status for e in store.evaluations(v.id)} for origin, v in by_origin.items()}
    decisions = _decisions(store)
    assert "crash" in statuses["scripted:crash"] and decisions[by_origin["scripted:crash"].id] == ["failed"]
    assert "timeout" in statuses["scripted:hang"] and decisions[by_origin["scripted:hang"].id] == ["failed"]
    assert statuses["scripted:leak"] == {"leak"} and decisions[by_origin["scripted:leak"].id] == ["refused"]
    failed = next(d for d in store.decisions(by_origin["scripted:crash"].id))
    assert "boom" in failed.detail["log_tail"]
    # each child stored once although the source proposed it twice (a refused child may be replaced by the
    # source's next proposal, depending on when its refusal lands: that one is not a duplicate)
    origins = Counter(v.origin for v in store.variants())
    assert [origins[f"scripted:{name}"] for name in ("crash", "hang", "leak")] == [1, 1, 1]
    assert store.meta()["result"]["members"] == []


def _evolve_command(run_dir: Path, strategy: str = "asha") -> list[str]:
    common = [sys.executable, "-m", "search", "evolve", "--run-dir", str(run_dir), "--plain", "--mutator", MOVES,
              "--strategy", strategy, "--time", "none", "--budget", "16k", "--device", "cpu", "--workers", "2",
              "--test-seeds", "2", "--eval-tokens", "4096"]
    if strategy == "asha":
        return [*common, "--population", "3", "--generations", "2", "--fractions", "1/4,1/2,1", "--seeds", "1,2,2",
                "--eta", "2", "--stack-trials", "0", "--combine-max", "1"]
    return [*common, "--compute", "192k"]  # 12 runs


def _finished(store_path: Path) -> dict[int, tuple]:
    if not store_path.exists():
        return {}
    store = Store(f"sqlite:///{store_path}")
    try:
        return {e.id: (e.variant_id, e.budget, e.seed, e.split, e.val_bpb, e.started, e.finished)
                for e in store.evaluations() if e.status != "running"}
    finally:
        store.close()


# The default strategy with real runs; every strategy's resume is tested on the synthetic task (test_strategies.py).
# The additive model draws its next stacks afresh from what finished, so what was running need not run again.
def test_a_search_killed_with_sigkill_resumes_without_losing_or_rerunning_anything(tmp_path):
    strategy, kill_after = "additive", 5
    run_dir = tmp_path / "run"
    database = run_dir / "evotrain.db"
    process = subprocess.Popen(_evolve_command(run_dir, strategy), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 300
        while len(_finished(database)) < kill_after and time.time() < deadline and process.poll() is None:
            time.sleep(0.5)
    finally:
        os.kill(process.pid, signal.SIGKILL)  # mid-flight: evaluations are running
        process.wait()
    before = _finished(database)
    assert len(before) >= kill_after, process.stdout.read().decode()[-2000:]

    resumed = subprocess.run(_evolve_command(run_dir, strategy), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stderr
    after = _finished(database)
    assert {k: after[k] for k in before} == before                 # nothing finished was lost or re-run
    assert len({v[:4] for v in after.values()}) == len(after)      # and nothing ran twice
    store = Store(f"sqlite:///{database}")
    assert store.meta()["phase"] == "done" and not [e for e in store.evaluations() if e.status == "running"]
    assert "test delta" in resumed.stdout


def test_ctrl_c_stops_cleanly_and_leaves_nothing_running(tmp_path):
    run_dir = tmp_path / "run"
    process = subprocess.Popen(_evolve_command(run_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while not _finished(run_dir / "evotrain.db") and time.time() < deadline and process.poll() is None:
            time.sleep(0.5)
        runs = psutil.Process(process.pid).children(recursive=True)   # the training subprocesses in flight
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130 and "Run the same command again to resume" in stderr
    store = Store(f"sqlite:///{run_dir / 'evotrain.db'}")
    assert not [e for e in store.evaluations() if e.status == "running"]   # re-queued for the resume
    assert store.meta()["snapshot"]["phase"] == "stopped"
    assert runs and not [r for r in runs if r.is_running() and r.status() != psutil.STATUS_ZOMBIE]


def test_a_second_search_on_the_same_run_is_refused(tmp_path):
    from search.lock import RunLock
    from trainer.errors import UserError

    with RunLock(tmp_path):
        with pytest.raises(UserError, match="in use by another search"):
            RunLock(tmp_path).__enter__()
