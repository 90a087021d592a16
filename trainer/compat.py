"""Compatibility mode: scripts in autoresearch's style, which print their own `val_bpb:` line.

Such a script measures itself, so its numbers are kept but marked untrusted, and the search
refuses them unless its user asked for compatibility mode (trainer/trust.py). It runs as it is,
sandboxed like any variant (with read-only access to ~/.cache, where such scripts keep their
data, but never to evotrain's dataset cache), its `.py` neighbours beside it.

`uses_runtime` is the one definition of "uses the runtime", shared by static validation and the
runner: a script that names the trainer package anywhere (an import, or a module name in a
string) runs under the runtime, so importing it in some unusual way can never switch a script
into compatibility mode. One that then never calls runtime.finish is simply invalid.
"""
from __future__ import annotations

import ast
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING

from trainer.parsing import parse_python
from trainer.program import Program
from trainer.result import EvalResult, Status
from trainer.spec import RunSpec

if TYPE_CHECKING:
    from trainer.supervise import Watch

_PRINTED = {
    "val_bpb": "val_bpb",
    "training_seconds": "training_seconds",
    "peak_vram_mb": "peak_memory_mb",
    "num_steps": "steps",
    "total_tokens_M": "tokens",
}
_LINE = re.compile(r"^\s*([a-zA-Z_]+):\s*([-+0-9.eE]+|nan|inf)\s*$", re.MULTILINE)
_PACKAGE = "trainer"


def uses_runtime(source: str) -> bool:
    """True unless the script is plainly a stand-alone one: no import of the trainer package in any
    form and no string naming it in any of its files (a SyntaxError counts as using it: the launcher
    reports it)."""
    return any(_file_uses_runtime(text) for _, text in Program.parse(source).files)


def _file_uses_runtime(source: str) -> bool:
    try:
        tree = parse_python(source)
    except (SyntaxError, ValueError, RecursionError):
        return True
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == _PACKAGE:
            return True
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == _PACKAGE for a in node.names):
            return True
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and (
                node.value == _PACKAGE or node.value.startswith(_PACKAGE + ".")):
            return True
    return False


def printed_metrics(log_text: str) -> dict[str, float]:
    """The last value printed for each known summary key, in EvalResult's names."""
    found: dict[str, float] = {}
    for key, value in _LINE.findall(log_text):
        if key in _PRINTED:
            found[_PRINTED[key]] = float(value)
    if "tokens" in found:
        found["tokens"] = int(found["tokens"] * 1e6)
    if "steps" in found:
        found["steps"] = int(found["steps"])
    return found


def run_compat(source: str, spec: RunSpec, watch: Watch, *, log_path: Path | None, isolation: str) -> EvalResult:
    """Run the script as it is, until it exits; its printed summary is its (untrusted) result."""
    # here, not at the top: static validation imports this module for uses_runtime and stays light
    from trainer.sandbox import start_child
    from trainer.supervise import converse, exit_status, finish, reply, run_log, tail

    child = start_child("compat", spec.device, spec.threads, files=Program.parse(source).runnable(), keep_home=True)
    try:
        with run_log(log_path) as log_fd:
            child.wait_ready(watch.remaining())
            child.confine(watch.memory_mb)
            reply(child, watch, {"type": "job"}, fds=[log_fd])
            converse(child, watch, lambda header, payload: False, max_payload=0)
            returncode = finish(child, watch)
            log_tail = tail(log_fd) or tail(child.start_log)
            oom = child.group is not None and child.group.oom_killed()
    finally:
        child.discard()
    status, message = (watch.killed_for, watch.message) if watch.killed_for else exit_status(returncode, oom, log_tail)
    printed = printed_metrics(log_tail)
    if status is Status.INVALID:  # exited 0: a compat script's contract is the printed line
        status, message = (Status.OK, "compatibility mode: score printed by the script itself") if "val_bpb" in printed \
            else (Status.INVALID, "compatibility mode: the script printed no `val_bpb:` line")
    if status is Status.OK and not math.isfinite(printed["val_bpb"]):
        status, message = Status.NAN, f"the script printed val_bpb: {printed['val_bpb']}"
    if status is not Status.OK:
        printed.pop("val_bpb", None)
    printed.setdefault("peak_memory_mb", watch.peak_rss_mb)
    seconds = printed.get("training_seconds", 0.0)
    return EvalResult(status=status, message=message, trusted=False, wall_seconds=watch.elapsed(),
                      device=spec.device, budget="set by the script", budget_unit="script", seed=spec.seed,
                      split=spec.split, log_tail=log_tail, isolation=isolation,
                      tokens_per_second=printed.get("tokens", 0) / seconds if seconds else 0.0, **printed)
