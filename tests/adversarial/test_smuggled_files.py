"""A variant is its script plus the baseline's local modules, written into its sandbox by name: a variant must
not get a file of its choosing there (a `sitecustomize.py` Python would run first) or outside it (a path)."""
import json

import pytest

from mutations.edits import ApplyError
from mutations.patch import from_node_edits
from trainer.program import Program
from trainer.runner import run_variant

from tests.adversarial.harness import attack_source


def test_a_program_naming_a_path_never_reaches_the_sandbox(spec, tmp_path):
    target = tmp_path / "sitecustomize.py"
    name = "../" * 8 + str(target).lstrip("/")
    text = json.dumps({"evotrain_program": 1, "files": [["train.py", attack_source()], [name, "import os\n"]]})
    with pytest.raises(ValueError, match="not a file name a program may hold"):
        run_variant(text, spec, timeout_s=60)
    assert not target.exists()


def test_an_edit_cannot_add_a_module_to_the_program():
    program = Program((("train.py", attack_source()), ("model.py", "WIDTH = 64\n")))
    edit = {"target": "sitecustomize.py::HOOK", "action": "insert", "code": "HOOK = 1\n"}
    with pytest.raises(ApplyError, match="no file sitecustomize.py"):
        from_node_edits(program.text, [edit])
