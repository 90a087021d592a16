"""Multi-file variants: a script and the local modules it imports, edited, merged, validated and run as one."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from mutations.catalog import get
from mutations.diff import structural_diff
from mutations.edits import ApplyError, Edit, Action, Mutation, apply_mutation
from mutations.knobs import extract_knobs, set_knobs
from mutations.merge import merge
from mutations.patch import from_search_replace, unified_diff
from mutations.sources._base import ProposalRequest
from mutations.sources.prompt import first_turn
from mutations.validation import Reason, validate_source
from search.driver import baseline_identity
from trainer.errors import UserError
from trainer.program import Program

# nanoGPT-shaped: train.py and model.py, as `search adopt` writes them (tests/test_adopt.py keeps them so)
NANOGPT_PROJECT = Path(__file__).parent / "fixtures" / "adopt" / "nanogpt" / "expected"


@pytest.fixture
def project() -> Program:
    return Program.load(NANOGPT_PROJECT / "train.py")


def test_a_script_brings_the_local_modules_it_imports_and_nothing_else(tmp_path):
    (tmp_path / "train.py").write_text("import os\nimport helpers\nfrom trainer import runtime\n")
    (tmp_path / "helpers.py").write_text("from model import GPT\n")
    (tmp_path / "model.py").write_text("class GPT:\n    pass\n")
    (tmp_path / "configurator.py").write_text("x = 1\n")  # beside it but never imported
    program = Program.load(tmp_path / "train.py")
    assert program.names == ("train.py", "helpers.py", "model.py")
    assert Program.parse(program.text) == program


def test_a_lone_script_is_its_own_text(tmp_path):
    (tmp_path / "train.py").write_text("from trainer import runtime\nX = 1\n")
    assert Program.load(tmp_path / "train.py").text == "from trainer import runtime\nX = 1\n"


@pytest.mark.parametrize("name", ["../evil.py", "sub/model.py", ".hidden.py", "model.txt"])
def test_a_stored_program_cannot_name_a_path_outside_its_folder(name):
    text = json.dumps({"evotrain_program": 1, "files": [["train.py", "x = 1\n"], [name, "y = 2\n"]]})
    with pytest.raises(ValueError, match="not a file name a program may hold"):
        Program.parse(text)


def test_the_script_may_have_any_plain_name(tmp_path):
    (tmp_path / "train-gpt2.py").write_text("import model\n")
    (tmp_path / "model.py").write_text("X = 1\n")
    program = Program.load(tmp_path / "train-gpt2.py")
    assert Program.parse(program.text).names == ("train-gpt2.py", "model.py")
    assert list(program.runnable()) == ["train.py", "model.py"]  # it runs as train.py in the sandbox


def test_one_change_may_edit_both_files_and_round_trips(project):
    changed = project.with_sources({
        "model.py": project.source("model.py").replace("F.gelu(self.c_fc(x))", "F.silu(self.c_fc(x))"),
        "train.py": project.script.replace("learning_rate = 3e-3", "learning_rate = 6e-3")})
    mutation = structural_diff(project.text, changed.text)
    assert {edit.target for edit in mutation.edits} == {"learning_rate", "model.py::MLP.forward"}
    assert apply_mutation(project.text, mutation) == changed.text


def test_an_edit_of_a_file_the_program_lacks_is_refused_with_its_name(project):
    edit = Edit(Action.REPLACE, "optim.py::make", "def make():\n    pass\n")
    with pytest.raises(ApplyError, match="no file optim.py"):
        apply_mutation(project.text, Mutation((edit,)))


def test_changes_to_different_files_merge(project):
    relu = structural_diff(project.text, get("relu2").apply(project.text))
    deeper = structural_diff(project.text, get("deeper").apply(project.text))
    merged = apply_mutation(project.text, merge(project.text, relu, deeper))
    files = Program.parse(merged)
    assert "F.relu(" in files.source("model.py") and "n_layer = 3" in files.script


def test_catalog_moves_change_the_file_that_holds_their_pattern(project):
    assert Program.parse(get("rmsnorm").apply(project.text)).script == project.script  # the model is in model.py
    deeper = Program.parse(get("deeper").apply(project.text))
    assert deeper.source("model.py") == project.source("model.py") and deeper.script != project.script


def test_a_refusal_in_a_module_names_it(project):
    bad = project.with_sources({"model.py": "import socket\n" + project.source("model.py")})
    refusals = validate_source(bad.text, baseline=project.text).refusals
    assert [r.reason for r in refusals] == [Reason.FORBIDDEN_IMPORT]
    assert refusals[0].message.startswith("in model.py:")


def test_a_runtime_call_removed_from_the_script_is_refused_even_with_modules(project):
    broken = project.with_sources({"train.py": project.script.replace("runtime.step(full_logits, loss)", "pass")})
    assert Reason.PROTECTED in [r.reason for r in validate_source(broken.text, baseline=project.text).refusals]


def test_search_replace_blocks_edit_the_file_that_holds_the_text(project):
    answer = "<<<<<<< SEARCH\n        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))\n=======\n" \
             "        return self.dropout(self.c_proj(F.silu(self.c_fc(x))))\n>>>>>>> REPLACE\n"
    mutation = from_search_replace(project.text, answer)
    assert [edit.target for edit in mutation.edits] == ["model.py::MLP.forward"]


def test_one_patch_changes_every_file_as_git_apply_reads_it(project, tmp_path):
    changed = Program.parse(get("deeper").apply(get("relu2").apply(project.text)))
    project.save(tmp_path)
    subprocess.run(["git", "apply", "-"], input=unified_diff(project.text, changed.text), text=True, cwd=tmp_path,
                   check=True)
    assert Program.load(tmp_path / "train.py") == changed


def test_the_llm_sees_every_file_and_its_addresses(project):
    text = "\n".join(block["text"] for block in first_turn(ProposalRequest(parent_source=project.text), "")["content"])
    assert "## model.py" in text and "## train.py" in text
    assert "model.py::GPT.configure_optimizers" in text


def test_knobs_of_every_file_are_listed_and_set_where_they_live(project):
    with_muon = Program.parse(get("muon").apply(project.text))  # muon adds its MUON_LR knob to model.py
    names = [knob.name for knob in extract_knobs(with_muon.text)]
    assert "learning_rate" in names and "model.py::MUON_LR" in names
    tuned = Program.parse(set_knobs(with_muon.text, {"model.py::MUON_LR": 0.01, "learning_rate": 1e-3}))
    assert "MUON_LR = 0.01" in tuned.source("model.py") and "learning_rate = 1e-3" in tuned.script
    with pytest.raises(UserError, match="MUON_LRR"):
        set_knobs(with_muon.text, {"model.py::MUON_LRR": 0.01})


def test_a_run_cannot_resume_over_an_edited_module(tmp_path):
    project = Program.load(NANOGPT_PROJECT / "train.py")
    project.save(tmp_path)
    before = baseline_identity(Program.load(tmp_path / "train.py"))
    (tmp_path / "model.py").write_text(project.source("model.py").replace("F.gelu", "F.silu"))
    assert baseline_identity(Program.load(tmp_path / "train.py")) != before


def test_an_unreadable_module_is_a_one_line_error(tmp_path):
    (tmp_path / "train.py").write_text("import model\n")
    (tmp_path / "model.py").write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(UserError, match="cannot read .*model.py"):
        Program.load(tmp_path / "train.py")
