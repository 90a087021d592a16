"""Executors: slot rules, concurrent local evaluations, pruning, crashes and stop; Ray behind a marker."""
from __future__ import annotations

import os
import sys
import textwrap
import time
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from search import executors
from search.executors import EvalJob, LocalExecutor, RayExecutor, Slot, local_slots
from tests.conftest import launcher_processes, tiny_script, wait_gone
from trainer.errors import UserError
from trainer.result import Status
from trainer.runner import smoke_spec


@dataclass(frozen=True)
class StopAtFirstProbe:
    """A picklable pruning rule, as the search passes them."""

    def __call__(self, event: dict) -> bool:
        return event["event"] == "probe"


def saying(word: str) -> str:
    """The tiny script, printing word into its log before it finishes."""
    return tiny_script(before_finish=f"print({word!r}, flush=True)")


# A script that starts a subprocess of its own, then sleeps past any test's patience; its child's
# command line marks the run, wherever the executor runs it.
CHILD_COMMAND = ["sleep", "613"]
HANGING = textwrap.dedent(f"""
    import subprocess, time
    from trainer import runtime
    child = subprocess.Popen({CHILD_COMMAND!r})
    time.sleep(600)
""")


def make_job(key: int, folder: Path, source: str, budget: str = "4k", **changes) -> EvalJob:
    job = EvalJob(key=key, source=source, spec=smoke_spec(budget), timeout_s=120,
                  log_path=folder / "logs" / f"{key}.txt", label=f"v{key}")
    return replace(job, **changes)


def drive(executor, queued: list[EvalJob], expected: int, timeout_s: float = 90) -> tuple[dict, int]:
    """A minimal driver loop: submit while slots are free, collect until `expected` results came back.
    Returns the results by key and the most evaluation subprocesses seen at once."""
    queued, results, most = list(queued), {}, 0
    deadline = time.monotonic() + timeout_s
    while len(results) < expected:
        assert time.monotonic() < deadline, f"only {len(results)} of {expected} results after {timeout_s}s"
        while queued and executor.free_slots():
            executor.submit(queued.pop(0))
        most = max(most, launched_runs())
        results.update((job.key, result) for job, result in executor.wait(0.2))
    return results, most


def launched_runs() -> int:
    """Evaluation subprocesses this test process has running now (not the spare waiting for the next run:
    its scratch folder has no train.py yet)."""
    return sum(_has_script(child) for child in launcher_processes())


def _has_script(process: psutil.Process) -> bool:
    try:
        return (Path(process.cwd()) / "train.py").exists()
    except psutil.Error:
        return False


def started_tree(timeout_s: float = 300) -> list[psutil.Process]:
    """Once the hanging script has started its child: that child and the sandboxed processes above it
    (the interpreter and the `unshare` that started it), as seen from here."""
    deadline = time.monotonic() + timeout_s
    while not (children := [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == CHILD_COMMAND]):
        assert time.monotonic() < deadline, "the hanging script never started"
        time.sleep(0.1)
    return [*children, *(p for p in children[0].parents() if "trainer.launch" in " ".join(p.cmdline()))]


def assert_gone(processes: list[psutil.Process], within_s: float) -> None:
    alive = wait_gone(processes, within_s)
    assert not alive, f"processes {alive} still run {within_s}s after stop()"


# ---------------------------------------------------------------------------- slots

def test_cpu_slots_share_the_cores(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert local_slots("cpu") == [Slot("cpu", 1)] * 2
    assert local_slots("cpu", workers=1) == [Slot("cpu", 2)]
    assert local_slots("cpu", workers=3) == [Slot("cpu", 1)] * 3
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert local_slots("cpu") == [Slot("cpu", 4)] * 4


def test_workers_below_one_is_a_user_error():
    with pytest.raises(UserError, match="workers must be at least 1, but got 0"):
        local_slots("cpu", workers=0)


def test_cuda_slots_follow_the_visible_gpus(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5,7")
    assert local_slots("cuda") == [Slot("cuda:0", 0), Slot("cuda:1", 0), Slot("cuda:2", 0)]
    assert local_slots("cuda", workers=2) == [Slot("cuda:0", 0), Slot("cuda:1", 0)]
    assert local_slots("cuda:1") == [Slot("cuda:1", 0)]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(UserError, match="no GPU is visible"):
        local_slots("cuda")


def test_without_cuda_visible_devices_nvidia_smi_counts_the_gpus(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(executors.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    listing = "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-a)\nGPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-b)\n"
    monkeypatch.setattr(executors.subprocess, "run", lambda *args, **kwargs: SimpleNamespace(stdout=listing))
    assert local_slots("cuda") == [Slot("cuda:0", 0), Slot("cuda:1", 0)]


# ---------------------------------------------------------------------------- local executor

def test_three_jobs_on_two_slots(tmp_path):
    executor = LocalExecutor([Slot("cpu", 1)] * 2)
    jobs = [make_job(key, tmp_path, saying(f"hello from {key}")) for key in range(3)]
    executor.submit(jobs[0])
    executor.submit(jobs[1])
    assert executor.free_slots() == 0
    assert [(r.job.label, r.slot) for r in executor.running()] == [("v0", Slot("cpu", 1)), ("v1", Slot("cpu", 1))]
    with pytest.raises(RuntimeError, match="slots are busy"):
        executor.submit(jobs[2])
    results, most = drive(executor, jobs[2:], expected=3)
    assert most == 2  # both slots were used, never more
    assert executor.free_slots() == 2 and executor.running() == [] and executor.wait(5) == []
    for key, result in results.items():
        assert result.status is Status.OK, result.message + result.log_tail
        assert f"hello from {key}" in (tmp_path / "logs" / f"{key}.txt").read_text()
    executor.close()


def test_failures_come_back_as_results_and_the_executor_carries_on(tmp_path):
    executor = LocalExecutor([Slot("cpu", 1)] * 2)
    (tmp_path / "a-file").write_text("")
    pruned = make_job(0, tmp_path, tiny_script(), budget="200k", on_event=StopAtFirstProbe())
    crashing = make_job(1, tmp_path, tiny_script(before_finish="raise ValueError('boom')"))
    unrunnable = make_job(2, tmp_path, tiny_script(), log_path=tmp_path / "a-file" / "log.txt")
    fine = make_job(3, tmp_path, saying("still here"))
    results, _ = drive(executor, [pruned, crashing, unrunnable, fine], expected=4)
    assert results[0].status is Status.PRUNED and results[0].val_bpb is None and results[0].curve
    assert results[1].status is Status.CRASH and "ValueError: boom" in results[1].message
    assert results[2].status is Status.CRASH and "could not run the evaluation" in results[2].message
    assert results[2].budget == "4k" and results[2].device == "cpu"
    assert results[3].status is Status.OK, results[3].message + results[3].log_tail
    executor.close()


def test_stop_kills_running_jobs_and_drops_their_results(tmp_path):
    executor = LocalExecutor([Slot("cpu", 1)] * 2)
    executor.submit(make_job(0, tmp_path, HANGING))
    tree = started_tree()
    assert executor.running()[0].progress == 0
    started = time.monotonic()
    executor.stop()
    assert time.monotonic() - started < 3
    assert_gone(tree, within_s=1)
    assert executor.wait(0.5) == [] and executor.free_slots() == 2
    executor.close()


def test_ray_executor_without_ray_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(UserError, match=r"pip install 'evotrain\[ray\]'"):
        RayExecutor()


# ---------------------------------------------------------------------------- ray

@pytest.mark.ray
def test_ray_executor_runs_jobs_ships_logs_back_and_stops(tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        executor = RayExecutor()
        assert executor.slots == [Slot("cpu", 1)] * 2
        jobs = [make_job(key, tmp_path, saying(f"hello from {key}")) for key in range(2)]
        results, _ = drive(executor, jobs, expected=2, timeout_s=180)
        for key, result in results.items():
            assert result.status is Status.OK, result.message + result.log_tail
            assert f"hello from {key}" in (tmp_path / "logs" / f"{key}.txt").read_text()
        executor.submit(make_job(2, tmp_path, HANGING))
        tree = started_tree()
        started = time.monotonic()
        executor.stop()
        assert time.monotonic() - started < 5
        assert_gone(tree, within_s=0.5)
        assert executor.wait(0.5) == [] and executor.free_slots() == 2
        executor.close()
        assert ray.is_initialized()  # the executor leaves a Ray it did not start running
    finally:
        ray.shutdown()
