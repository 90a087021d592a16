"""The search's dashboard, its plain log, and `search status` on a stored run (no training)."""
from __future__ import annotations

import fcntl
import io
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
from click.testing import CliRunner
from rich.console import Console

from population.store import Store
from search.cli import cli
from search.lock import RunLock
from search.progress import LiveView, PlainLog, make_reporter, render, summary
from search.snapshot import MemberView, RungView, SlotView, Snapshot


def full_snapshot(**changes) -> Snapshot:
    values = dict(
        run="rope-hunt", phase="search", elapsed=754.0, remaining=300.0, children=14, children_limit=40,
        slots=[SlotView("cpu#0", "a1b2c3", "catalog:rope", "rung 1", "100k", 1, 0.42, 12.5),
               SlotView("cpu#1", "d4e5f6", "tune", "recheck", "300k", 2, 0.0, 3.0)],
        rungs=[RungView("33k", 1, 1, 12, 5), RungView("100k", 2, 1, 5, 2), RungView("300k", 3, 0, 2, 1)],
        evaluations={"ok": 33, "crash": 1, "timeout": 1, "pruned": 2, "running": 2},
        decisions={"accepted": 1, "rejected": 4},
        population=[MemberView("a1b2c3", "catalog:rope", "rotary positions", 2.6012, -0.123, -0.150, -0.096, 3),
                    MemberView("0base0", "baseline", "the built-in baseline", 2.7242, 0.0, None, None, 3)],
        noise={"sd": 0.0055, "mean": 2.7242, "n": 3, "budget": "300k"},
        fidelity=[{"low": "33k", "high": "100k", "n": 12, "spearman": 0.71, "kendall": 0.55}],
        llm_cost_usd=0.42, compute_seconds=3725.0,
        recent=[f"event {i}" for i in range(10)],
        result={"stack": "fedcba98", "members": ["rope", "muon"],
                "val_delta": {"mean": -0.2, "ci_low": -0.25, "ci_high": -0.15, "n": 5},
                "test_delta": {"mean": -0.18, "n": 5}},
        updated=time.time(),
    )
    values.update(changes)
    return Snapshot(**values)


def empty_snapshot() -> Snapshot:
    return Snapshot(run="r", phase="noise", elapsed=0, remaining=None, children=0, children_limit=None)


def text_of(snapshot: Snapshot) -> str:
    console = Console(record=True, width=140, file=io.StringIO())
    console.print(render(snapshot))
    return console.export_text()


# ---------------------------------------------------------------- render
def test_the_dashboard_shows_the_numbers_that_matter():
    text = text_of(full_snapshot())
    for expected in (
        "rope-hunt", "phase search", "12:34", "left 5:00", "children 14/40", "evaluations 37 (2 failed)",
        "LLM $0.42", "compute 1:02:05", "accepted 1, rejected 4",
        "rung 1", "recheck", "42%",                                  # slots
        "33k", "100k", "300k",                                      # rung budgets
        "-0.1230 [-0.1500, -0.0960] n=3", "2.6012", "rotary positions",  # best so far and population
        "baseline seed sd 0.0055 over 3 seeds at 300k",
        "33k->100k: spearman 0.71 kendall 0.55 (n=12)",
        "rope + muon", "fedcba98", "-0.2000 [-0.2500, -0.1500] n=5", "-0.1800 n=5",  # result
    ):
        assert expected in text, expected
    assert "event 9" in text and "event 3" not in text  # only the last few events


def test_an_empty_snapshot_renders_dashes():
    text = text_of(empty_snapshot())
    assert "phase noise" in text and "left -" in text and "best  -" in text and "noise  -" in text


def test_a_result_with_missing_keys_renders_what_is_there():
    text = text_of(full_snapshot(result={"members": ["rope"], "val_delta": {"mean": None}, "note": "cut short"}))
    assert "members  rope" in text and "note  cut short" in text


def test_a_snapshot_survives_its_json_round_trip():
    snapshot = full_snapshot()
    assert Snapshot.from_dict(json.loads(json.dumps(snapshot.to_dict()))) == snapshot


# ---------------------------------------------------------------- reporters
class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_plain_log_stamps_events_and_throttles_summaries():
    clock, stream = FakeClock(), io.StringIO()
    log = PlainLog(stream=stream, clock=clock)
    clock.now += 192
    log.event("a1b2c3 rung 1 seed 1: ok val_bpb 2.6012")
    log.refresh(full_snapshot())                  # 192 s after creation: the first summary
    clock.now += 30
    log.refresh(full_snapshot(children=15))       # 30 s later: throttled
    clock.now += 31
    log.refresh(full_snapshot(children=16))       # 61 s after the last summary
    clock.now += 5
    log.refresh(full_snapshot(children=17))
    log.close()                                   # the last picture is not lost
    lines = stream.getvalue().splitlines()
    assert lines[0] == "[00:03:12] a1b2c3 rung 1 seed 1: ok val_bpb 2.6012"
    assert [line.split("] ")[0] + "]" for line in lines] == ["[00:03:12]", "[00:03:12]", "[00:04:13]", "[00:04:18]"]
    assert lines[1].endswith("search: search, 14/40 children, 37 evaluations (2 failed), "
                             "best -0.1230 [-0.1500, -0.0960] n=3 catalog:rope, 5:00 left")
    assert "16/40 children" in lines[2] and "17/40 children" in lines[3]


def test_summary_of_an_empty_snapshot():
    assert summary(empty_snapshot()) == "search: noise, 0 children, 0 evaluations (0 failed), best -"


def test_live_view_draws_the_dashboard_and_leaves_it_on_screen():
    console = Console(record=True, width=140, file=io.StringIO(), force_terminal=True)
    view = LiveView(console)
    view.refresh(empty_snapshot())
    view.event("ignored: the snapshot carries recent events")
    view.refresh(full_snapshot())
    view.close()
    assert "-0.1230 [-0.1500, -0.0960] n=3" in console.export_text()


def test_make_reporter_picks_plain_lines_off_a_terminal():
    assert isinstance(make_reporter(), PlainLog)  # pytest's stderr is not a terminal
    assert isinstance(make_reporter(live=False), PlainLog)


# ---------------------------------------------------------------- search status
def stored_run(folder, snapshot: Snapshot | None = None, heartbeat: float | None = None):
    store = Store.in_run_dir(folder)
    if snapshot is not None:
        store.set_meta("snapshot", snapshot.to_dict())
    store.set_meta("heartbeat", heartbeat or time.time())
    store.close()
    return folder


def status(*args: str):
    return CliRunner().invoke(cli, ["status", *args])


def test_status_shows_a_stopped_run(tmp_path):
    run = stored_run(tmp_path / "run", full_snapshot(), heartbeat=time.time() - 3600)
    result = status(str(run))
    assert result.exit_code == 0, result.output
    assert result.output.startswith("not running (last update ")
    assert "-0.1230 [-0.1500, -0.0960] n=3" in result.output


def test_status_says_finished_when_the_search_is_done(tmp_path):
    run = stored_run(tmp_path / "run", full_snapshot(phase="done"))
    assert status(str(run)).output.startswith("finished")


def test_status_json_is_the_snapshot(tmp_path):
    run = stored_run(tmp_path / "run", full_snapshot())
    data = json.loads(status(str(run), "--format", "json").output)
    assert data["live"] is False and data["state"] == "not running"
    assert Snapshot.from_dict(data["snapshot"]).best.delta == -0.123


def test_a_held_lock_in_this_process_means_live(tmp_path):
    # flock belongs to the open file description: our own second open() conflicts with it
    run = stored_run(tmp_path / "run", full_snapshot())
    with open(run / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert json.loads(status(str(run), "--format", "json").output)["live"] is True
        assert status(str(run)).output.startswith("live (updated ")
    assert json.loads(status(str(run), "--format", "json").output)["live"] is False
    assert (run / ".lock").exists()  # status only tests the lock


def test_the_drivers_run_lock_means_live(tmp_path):
    run = stored_run(tmp_path / "run", full_snapshot())
    with RunLock(run):
        assert json.loads(status(str(run), "--format", "json").output)["state"] == "live"
    assert json.loads(status(str(run), "--format", "json").output)["state"] == "not running"


def test_a_lock_held_by_another_process_means_live(tmp_path):
    run = stored_run(tmp_path / "run", full_snapshot())
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import fcntl, sys
        handle = open({str(run / '.lock')!r}, "w")
        fcntl.flock(handle, fcntl.LOCK_EX)
        print("held", flush=True)
        sys.stdin.read()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert json.loads(status(str(run), "--format", "json").output)["live"] is True
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
    assert json.loads(status(str(run), "--format", "json").output)["live"] is False


def test_a_storage_url_is_live_while_its_heartbeat_is_fresh(tmp_path):
    url = f"sqlite:///{stored_run(tmp_path / 'run', full_snapshot()) / 'evotrain.db'}"
    assert json.loads(status("--storage", url, "--format", "json").output)["live"] is True
    stored_run(tmp_path / "run", full_snapshot(), heartbeat=time.time() - 31)
    assert json.loads(status("--storage", url, "--format", "json").output)["live"] is False


def test_status_defaults_to_the_newest_run(tmp_path, monkeypatch):
    old = stored_run(tmp_path / "runs" / "old", full_snapshot(run="old"))
    stored_run(tmp_path / "runs" / "new", full_snapshot(run="new"))
    os.utime(old / "evotrain.db", (time.time() + 60, time.time() + 60))  # the one written to last
    monkeypatch.chdir(tmp_path)
    assert json.loads(status("--format", "json").output)["snapshot"]["run"] == "old"


@pytest.mark.parametrize("make, args, words", [
    (lambda tmp: (tmp / "runs" / "x").mkdir(parents=True), ["runs/x"],
     "runs/x has no evotrain.db: is it a run directory?"),
    (lambda tmp: stored_run(tmp / "runs" / "x"), ["runs/x"], "runs/x has no recorded progress"),
    (lambda tmp: None, [], "no run found under ./runs: pass the run directory"),
    (lambda tmp: None, ["runs/nope"], "no such run directory: runs/nope"),
    (lambda tmp: None, ["--storage", "sqlite:///no/such.db"], "no such database file"),
    (lambda tmp: stored_run(tmp / "runs" / "x", full_snapshot()), ["runs/x", "--watch", "--format", "json"],
     "drop --format json"),
])
def test_bad_runs_are_one_clear_line(tmp_path, make, args, words):
    make(tmp_path)
    result = subprocess.run([sys.executable, "-m", "search", "status", *args], capture_output=True, text=True,
                            cwd=tmp_path, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("Error: ") and words in result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr
