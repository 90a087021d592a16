"""A two-file, nanoGPT-shaped project (train.py + model.py, as search adopt writes it) evolved end to end on CPU,
then exported."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import analysis
from search.config import EvolveConfig
from search.driver import Driver
from search.progress import NullReporter

# nanoGPT-shaped: train.py and model.py, as `search adopt` writes them (tests/test_adopt.py keeps them so)
NANOGPT_PROJECT = Path(__file__).parent / "fixtures" / "adopt" / "nanogpt" / "expected"


@pytest.fixture(scope="module")
def evolved(tmp_path_factory) -> tuple[Path, Path]:
    """(the project folder, the run directory) of a finished search over both files."""
    root = tmp_path_factory.mktemp("project")
    project = root / "project"
    shutil.copytree(NANOGPT_PROJECT, project)
    run_dir = root / "run"
    # bigram_embedding changes model.py (a large gain on this model), smaller_batch train.py's config block
    config = EvolveConfig(run_dir=run_dir, baseline=project / "train.py",
                          mutator="catalog:bigram_embedding,smaller_batch", budget="16k", compute="160k", time_limit=None, device="cpu", workers=2, test_seeds=2,
                          eval_tokens=4096, confirm_runs=1)
    Driver(config, NullReporter()).run()
    return project, run_dir


def test_the_search_trains_changes_of_both_files(evolved):
    _, run_dir = evolved
    run = analysis.load(run_dir)
    baseline = run.files(run.baseline_id)
    assert set(baseline) == {"train.py", "model.py"}
    trained = {e.variant_id for e in run.store.evaluations() if e.status == "ok"}
    changed = {name for variant in trained for name, text in run.files(variant).items() if text != baseline[name]}
    assert changed == {"train.py", "model.py"}  # the runner carried every variant's own model.py
    assert not [e for e in run.store.evaluations() if e.status != "ok"]
    assert run.store.meta()["result"]["test_delta"]["mean"] < 0


def test_the_patch_applies_to_the_project_and_gives_the_answer(evolved, tmp_path):
    project, run_dir = evolved
    copy = tmp_path / "copy"
    shutil.copytree(project, copy)
    subprocess.run(["git", "apply", str(run_dir / "best.patch")], cwd=copy, check=True)
    run = analysis.load(run_dir)
    assert {name: (copy / name).read_text() for name in ("train.py", "model.py")} == run.files(run.stack_id)


def test_export_git_commits_every_file_of_the_project(evolved, tmp_path):
    _, run_dir = evolved
    repo = tmp_path / "repo"
    subprocess.run([sys.executable, "-m", "search", "export", str(run_dir), "--git", str(repo)], check=True,
                   capture_output=True)
    tracked = subprocess.run(["git", "ls-files"], cwd=repo, capture_output=True, text=True, check=True).stdout.split()
    assert sorted(tracked) == ["model.py", "train.py"]
    run = analysis.load(run_dir)
    assert {name: (repo / name).read_text() for name in tracked} == run.files(run.stack_id)
    subjects = subprocess.run(["git", "log", "--format=%s"], cwd=repo, capture_output=True, text=True,
                              check=True).stdout.splitlines()
    atoms = [s for s in subjects if s.startswith(("catalog:", "knob:"))]
    assert atoms and all(re.search(r"[-+]\d\.\d{4} bpb alone, [-+]\d\.\d{4} in the stack \(model\)$", s) for s in atoms)
