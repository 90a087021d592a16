"""Spare interpreters: started ahead of their run, used once, never left behind."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import psutil

from tests.conftest import launcher_processes, tiny_script, wait_gone
from trainer.result import Status
from trainer.runner import run_variant
from trainer.sandbox import START_LOG
from trainer.spares import Spares

SAYS_WHERE_IT_RUNS = "import os\nprint('cwd', os.getcwd(), flush=True)\n" + tiny_script()


def waiting_folders(parent: psutil.Process | None = None, role: str = "train") -> set[str]:
    """The scratch folders of the waiting (or running) interpreters of `role`: one per process."""
    return {process.cwd() for process in launcher_processes(parent, role)}


def where_it_ran(result) -> str:
    return next(line for line in result.log_tail.splitlines() if line.startswith("cwd ")).split()[1]


def test_each_run_takes_the_waiting_interpreters_and_leaves_fresh_ones(make_spec):
    spec = make_spec("4k")
    with Spares() as spares:
        spares.replenish(spec.device, spec.threads)
        assert spares.wait_ready(spec.device, spec.threads, timeout_s=300)
        spare, scorer = waiting_folders(), waiting_folders(role="score")
        assert len(spare) == 1 and len(scorer) == 1  # a training interpreter and a scorer per kind of run
        first = run_variant(SAYS_WHERE_IT_RUNS, spec, timeout_s=120, spares=spares)
        assert first.status is Status.OK, first.message + first.log_tail
        assert {where_it_ran(first)} == spare  # the run used the interpreter started before it
        replacement = waiting_folders()
        assert len(replacement) == 1 and replacement != spare  # the used one is gone
        assert len(waiting_folders(role="score")) == 1 and waiting_folders(role="score") != scorer
        second = run_variant(SAYS_WHERE_IT_RUNS, spec, timeout_s=120, spares=spares)
        assert {where_it_ran(second)} == replacement  # one variant, one process, one folder
    assert waiting_folders() == set() and waiting_folders(role="score") == set()


def test_start_up_counts_from_the_handover_whether_or_not_the_spare_was_ready(make_spec):
    spec = make_spec("4k")
    with Spares() as spares:
        spares.replenish(spec.device, spec.threads)
        unready = run_variant(tiny_script(), spec, timeout_s=300, spares=spares)  # taken while it imports torch
        assert spares.wait_ready(spec.device, spec.threads, timeout_s=300)
        ready = run_variant(tiny_script(), spec, timeout_s=300, spares=spares)
    for result in (unready, ready):
        assert result.status is Status.OK, result.message + result.log_tail
        assert 0 < result.extra["startup_seconds"] < result.wall_seconds


def test_a_spare_that_died_while_waiting_is_replaced_by_a_fresh_process(make_spec):
    spec = make_spec("4k")
    with Spares() as spares:
        spares.replenish(spec.device, spec.threads)
        assert spares.wait_ready(spec.device, spec.threads, timeout_s=300)
        spare = launcher_processes()
        tree = [*spare, *(child for process in spare for child in process.children(recursive=True))]
        for process in spare:
            process.kill()  # PID 1 of its namespace: the kernel ends the rest
        assert not wait_gone(tree)  # dead before the run asks for it (a kill takes effect later)
        result = run_variant(tiny_script(), spec, timeout_s=120, spares=spares)
    assert result.status is Status.OK, result.message + result.log_tail


def test_closing_kills_the_spares_and_removes_their_folders(make_spec):
    spec = make_spec("4k")
    spares = Spares()
    spares.replenish(spec.device, spec.threads)
    assert spares.wait_ready(spec.device, spec.threads, timeout_s=300)
    waiting = launcher_processes() + launcher_processes(role="score")
    folders = [process.cwd() for process in waiting]
    spares.close()
    assert len(waiting) == 2 and not wait_gone(waiting)
    assert not any(os.path.exists(folder) for folder in folders)
    spares.replenish(spec.device, spec.threads)  # closed: starts nothing
    assert launcher_processes() == []


def test_a_spare_whose_driver_died_exits_on_its_own():
    driver = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import os, sys
        from trainer.spares import Spares
        Spares().replenish("cpu", 1)
        sys.stdin.readline()
        os._exit(0)  # a crash: no close(), no atexit
    """)], stdin=subprocess.PIPE)
    deadline = time.monotonic() + 300  # the driver imports the runner first: slow on a loaded machine
    while len(orphans := launcher_processes(psutil.Process(driver.pid)) +
               launcher_processes(psutil.Process(driver.pid), role="score")) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    driver.communicate(b"crash now\n")
    assert not wait_gone(orphans)  # its socket closed with the driver: it read no job and exited


def test_the_run_returns_when_the_score_is_in_not_when_the_script_exits(make_spec):
    lingering = tiny_script() + "import time\ntime.sleep(60)\n"
    result = run_variant(lingering, make_spec("4k"), timeout_s=120)
    assert result.status is Status.OK, result.message + result.log_tail
    assert result.wall_seconds < 20


def test_what_a_spare_printed_while_it_waited_comes_first_in_the_runs_log(make_spec, tmp_path):
    spec = make_spec("4k")
    with Spares() as spares:
        spares.replenish(spec.device, spec.threads)
        assert spares.wait_ready(spec.device, spec.threads, timeout_s=300)
        (folder,) = waiting_folders()
        # stands in for what an interpreter may print at start-up (an import warning, say)
        with open(os.path.join(folder, START_LOG), "ab") as log:
            log.write(b"said while waiting\n")
        result = run_variant(tiny_script(), spec, timeout_s=120, spares=spares, log_path=tmp_path / "run.log")
    assert result.status is Status.OK, result.message + result.log_tail
    assert (tmp_path / "run.log").read_text().startswith("said while waiting\n")


def test_a_spare_that_cannot_start_does_not_fail_the_run(make_spec, monkeypatch):
    def no_processes_left(*args, **kwargs):
        raise OSError(11, "Resource temporarily unavailable")

    spec = make_spec("4k")
    with Spares() as spares:
        monkeypatch.setattr("trainer.spares.start_child", no_processes_left)
        result = run_variant(tiny_script(), spec, timeout_s=120, spares=spares)
    assert result.status is Status.OK, result.message + result.log_tail
