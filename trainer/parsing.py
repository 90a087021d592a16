"""`ast.parse` that is safe to call from several threads.

CPython 3.11 keeps the AST converter's recursion depth in interpreter-wide state, so two
threads parsing at once can fail with "SystemError: AST constructor recursion depth
mismatch" (python/cpython#106905). The LLM source validates answers on a
thread pool (and executors run evaluations from threads), so every parse goes through one lock.
"""
from __future__ import annotations

import ast
import threading

_LOCK = threading.Lock()


def parse_python(source: str, filename: str = "<unknown>") -> ast.Module:
    with _LOCK:
        return ast.parse(source, filename)
