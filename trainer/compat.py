"""Compatibility mode for autoresearch-style scripts that print their own `val_bpb:` line.

Such a script measures itself, so its numbers are kept but marked untrusted.
"""
from __future__ import annotations

import ast
import re

from trainer.parsing import parse_python

_PRINTED = {
    "val_bpb": "val_bpb",
    "training_seconds": "training_seconds",
    "peak_vram_mb": "peak_memory_mb",
    "num_steps": "steps",
    "total_tokens_M": "tokens",
}
_LINE = re.compile(r"^\s*([a-zA-Z_]+):\s*([-+0-9.eE]+|nan|inf)\s*$", re.MULTILINE)


def uses_runtime(source: str) -> bool:
    """True when the script imports trainer.runtime (a SyntaxError counts as yes: the launcher reports it)."""
    try:
        tree = parse_python(source)
    except SyntaxError:
        return True
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "trainer" and any(a.name == "runtime" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and node.module == "trainer.runtime":
            return True
        if isinstance(node, ast.Import) and any(a.name == "trainer.runtime" for a in node.names):
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
