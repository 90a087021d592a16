"""`search export` on a finished run: the patch, --variant, --format json, --git and --tsv, as a user runs them."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mutations.diff import structural_diff
from mutations.edits import Mutation, apply_mutation
from population.store import Store
from search.cli.export import _stacked
from trainer.baselines import BASELINE


def search(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "search", *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout


def stored(run_dir: Path) -> tuple[dict, dict]:
    store = Store.in_run_dir(run_dir)
    try:
        return store.meta(), {v.id: v for v in store.variants()}
    finally:
        store.close()


@pytest.fixture(scope="module")
def run(finished_run):
    meta, variants = stored(finished_run)
    stack = variants[meta["result"]["stack"]]
    assert stack.id != meta["baseline"]["id"], "the tiny search found nothing to stack: see TINY_EVOLVE"
    return finished_run, meta, variants, stack


def applied(patch: str, baseline: str, folder: Path) -> str:
    """The baseline written as train.py in folder with the patch applied by `git apply`."""
    folder.mkdir()
    (folder / "train.py").write_text(baseline)
    (folder / "change.patch").write_text(patch)
    subprocess.run(["git", "apply", "change.patch"], cwd=folder, check=True, capture_output=True)
    return (folder / "train.py").read_text()


def test_the_patch_applies_to_the_baseline_and_gives_the_stack(run, tmp_path):
    run_dir, meta, variants, stack = run
    result = search("export", str(run_dir), "-o", str(tmp_path / "best.patch"))
    assert result.returncode == 0, result.stderr
    assert "best.patch" in result.stdout and stack.id in result.stderr
    baseline = variants[meta["baseline"]["id"]].source
    assert baseline == Path(BASELINE).read_text()  # the built-in one: the patch applies to the shipped file
    assert applied((tmp_path / "best.patch").read_text(), baseline, tmp_path / "copy") == stack.source
    printed = search("export", str(run_dir))  # no output file: the patch is the data on stdout
    assert printed.returncode == 0 and printed.stdout == (tmp_path / "best.patch").read_text()


def test_a_variant_prefix_exports_that_variant(run, tmp_path):
    run_dir, meta, variants, stack = run
    other = next(v for v in variants.values() if v.origin.startswith("catalog:") and v.source != stack.source)
    result = search("export", str(run_dir), "--variant", other.id[:6])
    assert result.returncode == 0, result.stderr
    assert applied(result.stdout, variants[meta["baseline"]["id"]].source, tmp_path / "copy") == other.source
    lineage = json.loads(search("export", str(run_dir), "--variant", other.id[:6], "--format", "json").stdout)
    assert lineage["stack"] is False and lineage["lineage"][-1]["variant"] == other.id
    assert lineage["lineage"][-1]["mutation"] == other.mutation


@pytest.mark.parametrize("prefix, words", [("zzzz", "no variant 'zzzz'"), ("", "matches")])
def test_an_unknown_or_ambiguous_prefix_is_one_line(run, prefix, words):
    result = search("export", str(run[0]), "--variant", prefix)
    assert result.returncode == 2
    assert result.stderr.startswith("Error: ") and words in result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr


def test_json_lists_the_stack_members_with_their_ablation(run):
    run_dir, meta, variants, stack = run
    data = json.loads(search("export", str(run_dir), "--format", "json").stdout)
    result = meta["result"]
    assert data["variant"] == stack.id and data["stack"] is True
    assert [a["atom"] for a in data["atoms"]] == result["members"]
    baseline = variants[meta["baseline"]["id"]].source
    for atom, row in zip(data["atoms"], result["ablation"]):
        for key in ("add_one", "leave_one_out"):
            if row[key] is None:  # not measurable (a leave-one-out whose other atoms do not merge without it)
                assert atom[key] is None
                continue
            assert set(atom[key]) == {"mean", "ci_low", "ci_high", "n", "p_better"}
            assert atom[key]["mean"] == row[key]["mean"] and atom[key]["n"] == row[key]["n"]
        # the mutation is relative to the baseline: it gives the atom's add-one variant
        assert apply_mutation(baseline, Mutation.from_dict(atom["mutation"])) == variants[row["alone"]].source
    assert data["val_delta"]["mean"] == result["val_delta"]["mean"]


def test_git_writes_the_baseline_then_one_commit_per_atom(run, tmp_path):
    run_dir, meta, variants, stack = run
    repo = tmp_path / "new-repo"
    result = search("export", str(run_dir), "--git", str(repo))
    assert result.returncode == 0, result.stderr
    branch = f"evotrain/{run_dir.name}-{stack.id[:8]}"
    assert git(repo, "branch", "--show-current").strip() == branch
    subjects = git(repo, "log", "--reverse", "--format=%s").splitlines()
    rows = meta["result"]["ablation"]
    extra = subjects[-1] == "remaining changes of the stack"
    assert len(subjects) == 1 + len(rows) + extra
    assert subjects[0].startswith("baseline")
    for subject, row in zip(subjects[1:], rows):
        alone, left_out = (f"{row[k]['mean']:+.4f}" if row[k] else "n/a" for k in ("add_one", "leave_one_out"))
        assert subject == f"{row['atom']}: {alone} bpb alone, {left_out} in the stack"
    bodies = git(repo, "log", "--reverse", "--format=%B%x00").split("\x00")
    assert "95% CI" in bodies[1] and "n=" in bodies[1] and str(run_dir.resolve()) in bodies[1]
    assert (repo / "train.py").read_text() == stack.source
    assert git(repo, "show", "HEAD:train.py") == stack.source
    assert git(repo, "status", "--porcelain") == ""
    again = search("export", str(run_dir), "--git", str(repo))
    assert again.returncode == 2 and "already exists" in again.stderr


def test_git_refuses_a_repository_with_uncommitted_changes(run, tmp_path):
    repo = tmp_path / "mine"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "notes.txt").write_text("mine\n")
    git(repo, "add", "notes.txt")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "mine")
    before = git(repo, "branch", "--show-current")
    (repo / "notes.txt").write_text("changed\n")
    result = search("export", str(run[0]), "--git", str(repo))
    assert result.returncode == 2
    assert result.stderr.strip() == f"Error: {repo} has uncommitted changes: commit or stash them first"
    assert git(repo, "branch", "--show-current") == before and (repo / "notes.txt").read_text() == "changed\n"
    assert "evotrain/" not in git(repo, "branch")


def test_tsv_has_one_row_per_top_rung_variant(run, tmp_path):
    run_dir, meta, variants, stack = run
    result = search("export", str(run_dir), "--tsv", str(tmp_path / "results.tsv"))
    assert result.returncode == 0, result.stderr
    lines = (tmp_path / "results.tsv").read_text().splitlines()
    assert lines[0] == "commit\tval_bpb\tmemory_gb\tstatus\tdescription"
    store = Store.in_run_dir(run_dir)
    try:
        top = {e.variant_id for e in store.evaluations() if e.budget == meta["noise"]["budget"] and e.split == "val"}
    finally:
        store.close()
    rows = [line.split("\t") for line in lines[1:]]
    assert [r[0] for r in rows] == [v[:7] for v in variants if v in top]  # creation order
    for commit, val_bpb, memory, status, description in rows:
        assert re.fullmatch(r"[0-9a-f]{7}", commit) and re.fullmatch(r"\d+\.\d{6}", val_bpb)
        assert re.fullmatch(r"\d+\.\d", memory) and status in ("keep", "discard", "crash") and description
    by_commit = {r[0]: r for r in rows}
    baseline = by_commit[meta["baseline"]["id"][:7]]
    assert baseline[1] == f"{meta['noise']['mean']:.6f}" and baseline[3:] == ["keep", "baseline"]
    assert by_commit[stack.id[:7]][3] == "keep"
    measured_only = [v for v in variants.values() if v.origin == "ablation" and v.id[:7] in by_commit]
    assert all(by_commit[v.id[:7]][3] == "discard" for v in measured_only)  # a measurement, not a kept change


# -------------------------------------------------------------------- the stacking of atoms, on snippets
BASE = "A = 1  # a\nB = 2  # b\nC = 3  # c\n"


def test_atoms_that_touch_different_code_stack_by_merge():
    first = structural_diff(BASE, BASE.replace("A = 1", "A = 10"))
    second = structural_diff(BASE, BASE.replace("B = 2", "B = 20"))
    combined, source, overlaps = _stacked(BASE, first, second, BASE.replace("A = 1", "A = 10"),
                                          BASE.replace("B = 2", "B = 20"))
    assert source == "A = 10  # a\nB = 20  # b\nC = 3  # c\n" and not overlaps
    assert apply_mutation(BASE, combined) == source


def test_a_retuned_atom_takes_its_own_version_of_the_code_it_shares():
    tuned = "A = 4  # a\nB = 20  # b\nC = 3  # c\n"   # re-tuned A, with its ancestors' B change bundled in
    current = "A = 10  # a\nB = 2  # b\nC = 30  # c\n"  # earlier atoms changed A and C
    first = structural_diff(BASE, current)
    combined, source, overlaps = _stacked(BASE, first, structural_diff(BASE, tuned), current, tuned)
    assert overlaps and source == "A = 4  # a\nB = 20  # b\nC = 30  # c\n"  # C of the earlier atom is kept
    assert apply_mutation(BASE, combined) == source


# -------------------------------------------------------------------- a stored run made by hand
PAIRED = {"n": 2, "mean": -0.5, "sd": 0.1, "ci_low": -1.4, "ci_high": 0.4, "p_better": 0.1, "seeds": [0, 1]}


def hand_made_run(run_dir: Path, stack_source: str) -> str:
    """A finished run with one atom (A = 10) whose final stack is stack_source; the atom's name."""
    store = Store.in_run_dir(run_dir)
    base, _ = store.add_variant(BASE, origin="baseline")
    atom, _ = store.add_variant(BASE.replace("A = 1", "A = 10"), parents=(base.id,), origin="catalog:a",
                                mutation={"name": "catalog:a", "description": "A up", "edits": []})
    stack = atom if stack_source == atom.source else base if stack_source == BASE else \
        store.add_variant(stack_source, parents=(atom.id,), origin="tune")[0]
    rows = [] if stack is base else [{"atom": "catalog:a#" + atom.id[:8], "description": "A up", "bundled": False,
                                      "estimate": -0.5, "alone": atom.id, "without": base.id,
                                      "add_one": PAIRED, "leave_one_out": PAIRED}]
    store.set_meta("options", {"run_dir": str(run_dir), "budget": "16k", "fractions": [0.5, 1.0], "seeds": [1, 2],
                               "eta": 2, "seed": 0})
    store.set_meta("baseline", {"id": base.id, "path": "built-in", "hash": ""})
    store.set_meta("result", {"stack": stack.id, "members": [r["atom"] for r in rows], "steps": [],
                              "ablation": rows, "val_delta": PAIRED, "test_delta": PAIRED})
    store.close()
    return "catalog:a#" + atom.id[:8]


def test_what_the_atoms_do_not_reproduce_is_a_last_commit(tmp_path):
    stack = BASE.replace("A = 1", "A = 10").replace("C = 3", "C = 7")  # C: a change no atom lists
    atom = hand_made_run(tmp_path / "run", stack)
    result = search("export", str(tmp_path / "run"), "--git", str(tmp_path / "repo"))
    assert result.returncode == 0, result.stderr
    subjects = git(tmp_path / "repo", "log", "--reverse", "--format=%s").splitlines()
    assert subjects[1:] == [f"{atom}: -0.5000 bpb alone, -0.5000 in the stack", "remaining changes of the stack"]
    assert (tmp_path / "repo" / "train.py").read_text() == stack


def test_a_stack_that_is_the_baseline_has_nothing_to_export(tmp_path):
    hand_made_run(tmp_path / "run", BASE)
    result = search("export", str(tmp_path / "run"), "-o", str(tmp_path / "best.patch"))
    assert result.returncode == 2 and "nothing to export" in result.stderr and not (tmp_path / "best.patch").exists()
    assert json.loads(search("export", str(tmp_path / "run"), "--format", "json").stdout)["atoms"] == []
