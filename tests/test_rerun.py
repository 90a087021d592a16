"""`search ablate` and `search transfer` on a copy of a finished tiny run: more real, paired evaluations."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

import analysis
from population.store import Store


def _search(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "search", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture
def run_copy(finished_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


def test_ablate_prints_the_table_and_extra_seeds_tighten_it(run_copy):
    before = analysis.load(run_copy).ablation
    shown = _search("ablate", str(run_copy))
    assert shown.returncode == 0, shown.stderr
    for atom in before["atom"]:
        assert atom in shown.stdout
    assert "sum of add-one" in shown.stdout

    more = _search("ablate", str(run_copy), "--seeds", "1", "--format", "json")
    assert more.returncode == 0, more.stderr
    after = analysis.load(run_copy).ablation
    assert (after["add_one_n"] == before["add_one_n"] + 1).all()
    rows = json.loads(more.stdout)
    assert rows[-1]["stack_total"]["members"] == len(before)
    seeds = {e.seed for e in Store.in_run_dir(run_copy).evaluations() if e.purpose == "ablation" and e.seed >= 500}
    assert seeds == {500}


def test_transfer_reevaluates_baseline_and_stack_with_overrides_on_fresh_paired_seeds(run_copy):
    done = _search("transfer", str(run_copy), "--set", "WIDTH=96", "--budget", "8k", "--seeds", "2")
    assert done.returncode == 0, done.stderr
    assert "stack" in done.stdout and ("yes" in done.stdout or "no" in done.stdout)
    store = Store.in_run_dir(run_copy)
    (record,) = store.meta()["transfers"]
    assert record["set"] == {"WIDTH": "96"} and record["budget"] == "8k" and record["seeds"] == [2000, 2001]
    transferred = [v for v in store.variants() if v.origin == "transfer"]
    assert len(transferred) == 2 and all("WIDTH = runtime.pick(cpu=96" in v.source for v in transferred)
    evaluated = {(e.variant_id, e.seed) for e in store.evaluations() if e.purpose == "transfer"}
    assert evaluated == {(v.id, s) for v in transferred for s in (2000, 2001)}


def test_transfer_with_an_unknown_knob_is_one_line(run_copy):
    refused = _search("transfer", str(run_copy), "--set", "NOPE=3")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "no knob NOPE" in refused.stderr.splitlines()[-1]
