"""Spare interpreters: started ahead of their run, used once, never left behind."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import psutil

from tests.conftest import launcher_processes, tiny_script
from trainer.result import Status
from trainer.runner import run_variant
from trainer.sandbox import START_LOG
from trainer.spares import Spares

SAYS_WHERE_IT_RUNS = "import os\nprint('pid', os.getpid(), 'cwd', os.getcwd(), flush=True)\n" + tiny_script()


def waiting_interpreters(parent: psutil.Process | None = None) -> set[int]:
    return {process.pid for process in launcher_processes(parent)}


def where_it_ran(result) -> tuple[int, str]:
    line = next(line for line in result.log_tail.splitlines() if line.startswith("pid "))
    _, pid, _, cwd = line.split()
    return int(pid), cwd


def test_each_run_takes_the_waiting_interpreter_and_leaves_a_fresh_one(make_spec):
    spec = make_spec("4k")
    with Spares() as spares:
        spares.replenish(spec.device, spec.threads)
        spare = waiting_interpreters()
        first = run_variant(SAYS_WHERE_IT_RUNS, spec, timeout_s=120, spares=spares)
        assert first.status is Status.OK, first.message + first.log_tail
        first_pid, first_cwd = where_it_ran(first)
        assert {first_pid} == spare  # the run used the interpreter started before it
        replacement = waiting_interpreters()
        assert len(replacement) == 1 and first_pid not in replacement  # the used one is gone
        second = run_variant(SAYS_WHERE_IT_RUNS, spec, timeout_s=120, spares=spares)
        second_pid, second_cwd = where_it_ran(second)
        assert {second_pid} == replacement and second_cwd != first_cwd  # one variant, one process, one folder
    assert waiting_interpreters() == set()


def test_start_up_counts_from_the_handover_not_from_when_the_spare_started(make_spec):
    spec = make_spec("4k")
    with Spares() as spares:
        spares.replenish(spec.device, spec.threads)
        time.sleep(6)  # the spare is ready and idle
        result = run_variant(tiny_script(), spec, timeout_s=120, spares=spares)
    assert result.status is Status.OK, result.message + result.log_tail
    assert result.extra["startup_seconds"] < result.wall_seconds < 6


def test_a_spare_that_died_while_waiting_is_replaced_by_a_fresh_process(make_spec):
    spec = make_spec("4k")
    with Spares() as spares:
        spares.replenish(spec.device, spec.threads)
        spare = [psutil.Process(pid) for pid in waiting_interpreters()]
        for process in spare:
            process.kill()
        psutil.wait_procs(spare, timeout=30)  # dead before the run asks for it (a kill takes effect later)
        result = run_variant(tiny_script(), spec, timeout_s=120, spares=spares)
    assert result.status is Status.OK, result.message + result.log_tail


def test_closing_kills_the_spares_and_removes_their_folders(make_spec):
    spec = make_spec("4k")
    spares = Spares()
    spares.replenish(spec.device, spec.threads)
    (pid,) = waiting_interpreters()
    folder = psutil.Process(pid).cwd()
    spares.close()
    assert not psutil.pid_exists(pid)
    assert not os.path.exists(folder)
    spares.replenish(spec.device, spec.threads)  # closed: starts nothing
    assert waiting_interpreters() == set()


def test_a_spare_whose_driver_died_exits_on_its_own():
    driver = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import os, sys
        from trainer.spares import Spares
        Spares().replenish("cpu", 1)
        sys.stdin.readline()
        os._exit(0)  # a crash: no close(), no atexit
    """)], stdin=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not (orphans := waiting_interpreters(psutil.Process(driver.pid))):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    driver.communicate(b"crash now\n")
    _, alive = psutil.wait_procs([psutil.Process(pid) for pid in orphans], timeout=60)
    assert not alive  # its stdin closed with the driver: it read no spec and exited


def test_the_run_returns_when_the_score_is_in_not_when_the_script_exits(make_spec):
    lingering = tiny_script() + "import time\ntime.sleep(60)\n"
    result = run_variant(lingering, make_spec("4k"), timeout_s=120)
    assert result.status is Status.OK, result.message + result.log_tail
    assert result.wall_seconds < 20


def test_what_a_spare_printed_while_it_waited_comes_first_in_the_runs_log(make_spec, tmp_path):
    spec = make_spec("4k")
    with Spares() as spares:
        spares.replenish(spec.device, spec.threads)
        (pid,) = waiting_interpreters()
        # stands in for what an interpreter may print at start-up (an import warning, say)
        with open(os.path.join(psutil.Process(pid).cwd(), START_LOG), "ab") as log:
            log.write(b"said while waiting\n")
        result = run_variant(tiny_script(), spec, timeout_s=120, spares=spares, log_path=tmp_path / "run.log")
    assert result.status is Status.OK, result.message + result.log_tail
    assert (tmp_path / "run.log").read_text().startswith("said while waiting\n")


def test_a_spare_that_cannot_start_does_not_fail_the_run(make_spec, monkeypatch):
    def no_processes_left(*args, **kwargs):
        raise OSError(11, "Resource temporarily unavailable")

    spec = make_spec("4k")
    with Spares() as spares:
        monkeypatch.setattr("trainer.spares.start_launcher", no_processes_left)
        result = run_variant(tiny_script(), spec, timeout_s=120, spares=spares)
    assert result.status is Status.OK, result.message + result.log_tail
