"""Static validation and the smoke run: the gate before any training budget is spent."""
from __future__ import annotations

import pytest

from mutations.validation import Reason, Refusal, Verdict, smoke_run, validate_source
from trainer.baselines import BASELINE

SOURCE = BASELINE.read_text()
RUNTIME_IMPORT = "from trainer import runtime\n"
INSERTED_LINE = SOURCE[: SOURCE.index(RUNTIME_IMPORT)].count("\n") + 2  # the line after the runtime import


def with_lines(code: str) -> str:
    """The baseline with `code` inserted at module level right after the runtime import."""
    assert RUNTIME_IMPORT in SOURCE
    return SOURCE.replace(RUNTIME_IMPORT, RUNTIME_IMPORT + code + "\n", 1)


def without(text: str) -> str:
    assert text in SOURCE
    return SOURCE.replace(text, "")


def reasons(verdict: Verdict) -> list[Reason]:
    return [refusal.reason for refusal in verdict.refusals]


def only(verdict: Verdict, reason: Reason) -> Refusal:
    assert reasons(verdict) == [reason], verdict.summary()
    return verdict.refusals[0]


# ---------------------------------------------------------------- the baseline
def test_baseline_passes_every_check():
    verdict = validate_source(SOURCE)
    assert verdict.ok, verdict.summary()
    assert verdict.summary() == "ok"


def test_baseline_with_a_real_change_passes_against_itself():
    changed = SOURCE.replace("LEARNING_RATE = 1e-3", "LEARNING_RATE = 3e-3")
    assert validate_source(changed, baseline=SOURCE).ok


@pytest.mark.parametrize("code", [
    "compiled = torch.compile(lambda x: x)",
    "from torch import compile as torch_compile",
    "from concurrent.futures import ThreadPoolExecutor",
    "import os\nWORKERS = os.cpu_count()",
    "import numpy as np\nNOISE = np.zeros(3)",
    "def evaluate(model):\n    model.eval()",
    "SCALE = getattr(torch.nn.functional, 'gelu')",
    "import sys\nprint('starting', file=sys.stderr)",
])
def test_ordinary_training_code_is_allowed(code):
    verdict = validate_source(with_lines(code))
    assert verdict.ok, verdict.summary()


# ---------------------------------------------------------------- one test per reason
def test_syntax_error_names_its_line_and_stops_the_checks():
    source = with_lines("import socket\ndef broken(:\n    pass")
    refusal = only(validate_source(source), Reason.SYNTAX)
    assert refusal.line == INSERTED_LINE + 1
    assert "def broken(:" in refusal.message


def test_return_at_module_level_does_not_compile():
    refusal = only(validate_source(with_lines("return 1")), Reason.COMPILE)
    assert refusal.line == INSERTED_LINE
    assert "'return' outside function" in refusal.message


def test_duplicate_argument_does_not_compile():
    refusal = only(validate_source(with_lines("def f(a, a):\n    return a")), Reason.COMPILE)
    assert "duplicate argument" in refusal.message


def test_identical_source_is_a_noop():
    only(validate_source(SOURCE, baseline=SOURCE), Reason.NOOP)


def test_whitespace_and_comment_changes_are_a_noop():
    reformatted = SOURCE.replace("# transformer blocks", "# blocks").replace("\n\nclass MLP", "\n\n\nclass MLP")
    refusal = only(validate_source(reformatted, baseline=SOURCE), Reason.NOOP)
    assert "whitespace or comments" in refusal.message


def test_script_without_the_runtime_is_refused():
    source = "import torch\nmodel = torch.nn.Linear(2, 2)\nprint('val_bpb: 1.0')\n"
    refusal = only(validate_source(source), Reason.NO_RUNTIME)
    assert "from trainer import runtime" in refusal.message


def test_the_runtime_imported_under_its_module_name_counts():
    source = SOURCE.replace(RUNTIME_IMPORT, "import trainer.runtime as runtime\n")
    assert validate_source(source).ok, validate_source(source).summary()


def test_a_runtime_function_imported_by_name_counts_as_its_call():
    source = SOURCE.replace(RUNTIME_IMPORT, RUNTIME_IMPORT + "from trainer.runtime import finish\n")
    source = source.replace("runtime.finish(model)", "finish(model)")
    assert validate_source(source).ok, validate_source(source).summary()
    only(validate_source(source.replace("finish(model)", "pass")), Reason.PROTECTED)


@pytest.mark.parametrize("removed, name", [
    ("runtime.finish(model)", "finish"),
    ("    runtime.step(model, loss)\n", "step"),
])
def test_removing_a_protected_runtime_call_is_refused(removed, name):
    refusal = only(validate_source(without(removed)), Reason.PROTECTED)
    assert f"runtime.{name}(...)" in refusal.message


def test_with_a_baseline_every_runtime_call_it_makes_must_stay():
    constant_lr = SOURCE.replace("LEARNING_RATE * lr_multiplier(runtime.progress())", "LEARNING_RATE")
    assert validate_source(constant_lr).ok
    refusal = only(validate_source(constant_lr, baseline=SOURCE), Reason.PROTECTED)
    assert "runtime.progress(...)" in refusal.message


@pytest.mark.parametrize("code, named", [
    ("state = runtime._session", "runtime._session"),
    ("r = runtime\nstate = r._session", "runtime._session"),
    ("state = getattr(runtime, '_session')", "runtime._session"),
    ("names = runtime.__dict__", "runtime.__dict__"),
    ("from trainer import session", "trainer.session"),
    ("from trainer.evaluation import RunFailure", "trainer.evaluation"),
    ("import trainer.runner", "trainer.runner"),
    ("import trainer.runtime\nx = trainer.datasets", "trainer.datasets"),
    ("runtime.finish = print", "runtime.finish"),
    ("del runtime.step", "runtime.step"),
    ("setattr(runtime, 'finish', print)", "setattr"),
    ("runtime = None", "runtime"),
    ("def patch(runtime):\n    return runtime", "runtime"),
    ("import importlib\nm = importlib.import_module('trainer.session')", "importlib"),
    ("m = __import__('trainer.session')", "__import__"),
])
def test_touching_the_runtime_or_the_trusted_modules_is_protected(code, named):
    refusal = only(validate_source(with_lines(code)), Reason.PROTECTED)
    assert named in refusal.message
    assert refusal.line is not None and refusal.line >= INSERTED_LINE


@pytest.mark.parametrize("code, named", [
    ("import socket", "socket"),
    ("import http.client", "http"),
    ("from urllib.request import urlopen", "urllib"),
    ("import requests as r", "requests"),
    ("import subprocess", "subprocess"),
    ("from multiprocessing import Pool", "multiprocessing"),
    ("from concurrent.futures import ProcessPoolExecutor", "ProcessPoolExecutor"),
    ("import torch.multiprocessing as mp", "torch.multiprocessing"),
    ("import shutil", "shutil"),
    ("from pathlib import Path", "pathlib"),
    ("import glob", "glob"),
    ("import inspect", "inspect"),
    ("import gc", "gc"),
    ("import ctypes", "ctypes"),
    ("from os import *", "import *"),
])
def test_forbidden_imports_are_refused(code, named):
    refusal = only(validate_source(with_lines(code)), Reason.FORBIDDEN_IMPORT)
    assert named in refusal.message
    assert refusal.line == INSERTED_LINE


@pytest.mark.parametrize("code, named", [
    ("import os as o\no.system('ls')", "os.system"),
    ("from os import system", "os.system"),
    ("import os\nos.execv('/bin/sh', ['sh'])", "os.exec"),
    ("import os\nfor entry in os.walk('.'):\n    pass", "os.walk"),
    ("import os\nkey = os.environ.get('OPENAI_API_KEY')", "os.environ"),
    ("import os\nkey = os.getenv('HOME')", "os.getenv"),
    ("import os\nmethod = getattr(os, 'sys' + 'tem')", "getattr"),
    ("import sys\nframe = sys._getframe(1)", "sys._getframe"),
    ("import sys\nloaded = sys.modules", "sys.modules"),
    ("value = eval('1')", "eval"),
    ("exec('x = 1')", "exec"),
    ("code = compile('1', 'x', 'eval')", "compile"),
    ("try:\n    1 / 0\nexcept ZeroDivisionError as e:\n    caller = e.__traceback__.tb_frame", "tb_frame"),
])
def test_forbidden_calls_are_refused(code, named):
    refusal = only(validate_source(with_lines(code)), Reason.FORBIDDEN_CALL)
    assert named in refusal.message
    assert refusal.line is not None and refusal.line >= INSERTED_LINE


@pytest.mark.parametrize("code, named", [
    ("text = open('x').read()", "open"),
    ("import io\nf = io.open('x')", "io.open"),
    ("import numpy as np\ndata = np.memmap('train.bin')", "numpy.memmap"),
    ("from numpy import memmap", "numpy.memmap"),
    ("import numpy\ndata = numpy.load('x.npy')", "numpy.load"),
    ("state = torch.load('x.pt')", "torch.load"),
    ("import pickle", "pickle"),
])
def test_opening_files_is_data_access(code, named):
    refusal = only(validate_source(with_lines(code)), Reason.DATA_ACCESS)
    assert named in refusal.message
    assert "runtime.next_batch" in refusal.message


def test_a_5000_line_file_is_too_big():
    refusal = only(validate_source(SOURCE + "pass\n" * 5000), Reason.SIZE)
    assert "4000 line limit" in refusal.message


def test_a_file_over_the_byte_limit_is_too_big():
    refusal = only(validate_source(SOURCE, max_bytes=1000), Reason.SIZE)
    assert "1000 byte limit" in refusal.message


# ---------------------------------------------------------------- the verdict
def test_all_refusals_are_collected_in_line_order():
    source = with_lines("import socket\nimport os as o\no.system('ls')\ndata = open('x')\nstate = runtime._session")
    source = source.replace("runtime.finish(model)", "pass")
    verdict = validate_source(source)
    assert not verdict.ok
    assert reasons(verdict) == [Reason.FORBIDDEN_IMPORT, Reason.FORBIDDEN_CALL, Reason.DATA_ACCESS,
                                Reason.PROTECTED, Reason.PROTECTED]
    assert [r.line for r in verdict.refusals] == [INSERTED_LINE, INSERTED_LINE + 2, INSERTED_LINE + 3,
                                                  INSERTED_LINE + 4, None]


def test_every_message_is_one_line_and_the_summary_one_line_per_refusal():
    source = with_lines("import socket\nvalue = eval('1')\ndata = open('x')\nreturn 0") + "pass\n" * 5000
    verdict = validate_source(source.replace("runtime.finish(model)", "pass"))
    assert reasons(verdict) == [Reason.SIZE, Reason.COMPILE, Reason.FORBIDDEN_IMPORT, Reason.FORBIDDEN_CALL,
                                Reason.DATA_ACCESS, Reason.PROTECTED]
    assert all(r.message and "\n" not in r.message for r in verdict.refusals)
    assert verdict.summary().splitlines() == [str(r) for r in verdict.refusals]


def test_refusal_reads_as_code_line_and_message():
    assert str(Refusal(Reason.FORBIDDEN_IMPORT, "`socket` is networking", 3)) == \
        "forbidden_import (line 3): `socket` is networking"
    assert str(Refusal(Reason.NOOP, "identical")) == "noop: identical"


def test_reason_codes_are_stable():
    assert {r.value for r in Reason} == {"syntax", "compile", "noop", "no_runtime", "protected", "forbidden_import",
                                         "forbidden_call", "data_access", "size", "smoke", "apply"}


# ---------------------------------------------------------------- smoke runs (a few seconds each)
def test_baseline_passes_the_smoke_run():
    verdict = smoke_run(SOURCE)
    assert verdict.ok, verdict.summary()


def test_a_variant_that_fails_at_its_first_step_is_refused_with_the_error():
    anchor = "        B, T, C = x.shape\n"
    broken = SOURCE.replace(anchor, anchor + "        x = x.view(B, T, C + 1)\n")
    assert broken != SOURCE and validate_source(broken).ok
    refusal = only(smoke_run(broken), Reason.SMOKE)
    assert refusal.message.startswith("crash: RuntimeError: shape")
    assert "last log line: RuntimeError: shape" in refusal.message
    assert refusal.line == broken[: broken.index("x = x.view(B, T, C + 1)")].count("\n") + 1
    assert "\n" not in refusal.message


def test_a_script_without_the_runtime_is_not_smoke_run():
    refusal = only(smoke_run("print('val_bpb: 1.0')\n"), Reason.NO_RUNTIME)
    assert "from trainer import runtime" in refusal.message


def test_a_mutation_that_does_not_apply_is_refused_as_apply():
    from mutations.diff import structural_diff
    from mutations.validation import validate_mutation

    mutation = structural_diff(SOURCE, SOURCE.replace("BETA2 = 0.95", "BETA2 = 0.99"))
    child, verdict = validate_mutation(SOURCE, mutation)
    assert verdict.ok and "BETA2 = 0.99" in child
    moved = SOURCE.replace("BETA2 = 0.95", "BETA2 = 0.9")
    child, verdict = validate_mutation(moved, mutation)
    assert child is None and [r.reason.value for r in verdict.refusals] == ["apply"]
    assert "BETA2 has changed" in verdict.summary()
