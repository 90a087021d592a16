"""What adopt made pointless: prints and assignments of what it removed, and module-level assignments and
imports nothing reads any more. Only what adopt made dead goes; the script's own dead code stays."""
from __future__ import annotations

import libcst as cst

from mutations.adopt.notes import Notes
from mutations.adopt.syntax import (
    BlockTransformer,
    assigned_names,
    bound_name,
    calls,
    code,
    is_call_to,
    names_in,
    only_small,
    references,
    unresolved,
)

# calls a dead assignment may make and still be dropped: nothing else happens when they do not run
_PURE = {"time.time", "time.perf_counter", "os.path.join", "os.environ.get", "int", "float", "str", "bool", "dict",
         "len", "min", "max", "round", "torch.cuda.is_available", "torch.cuda.is_bf16_supported"}


def clean(module: cst.Module, original: cst.Module, notes: Notes) -> cst.Module:
    read_before = set(references(original))
    dropped: dict[str, list[str]] = {}
    while True:
        cleaner = _Cleaner(notes, {n.value for n in unresolved(module)} & set(notes.gone),
                           read_before - set(references(module)), set(references(module.visit(_NoPrints()))), dropped)
        cleaned = module.visit(cleaner)
        if cleaned.deep_equals(module):
            break
        module = cleaned
    for why, what in dropped.items():
        notes.did(f"{why}: {', '.join(what)}")
    return module


def _is_print(small: cst.BaseSmallStatement | None) -> bool:
    return isinstance(small, cst.Expr) and isinstance(small.value, cst.Call) and is_call_to(small.value, {"print"})


class _NoPrints(BlockTransformer):
    """The module without its print statements: what else reads a name."""

    def change(self, node: cst.BaseStatement) -> list[cst.BaseStatement] | None:
        return [] if _is_print(only_small(node)) else None


class _Cleaner(BlockTransformer):
    def __init__(self, notes: Notes, gone: set[str], dead: set[str], unprinted: set[str],
                 dropped: dict[str, list[str]]) -> None:
        self.notes, self.gone, self.dead, self.dropped = notes, gone, dead, dropped
        self.unprinted = unprinted   # the names read other than in prints
        self.depth = 0

    def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
        self.depth += 1
        return node.name.value not in self.dead  # a function that goes whole is not cleaned first

    def leave_FunctionDef(self, original: cst.FunctionDef, updated: cst.FunctionDef) -> cst.FunctionDef:
        self.depth -= 1
        return updated

    def change(self, updated: cst.BaseStatement) -> list[cst.BaseStatement] | None:
        small = only_small(updated)
        reads_gone = sorted(names_in(updated) & self.gone)
        if _is_print(small) and reads_gone:
            return self._drop("dropped the prints of what adopt removed", code(small))
        if self.depth == 0 and isinstance(updated, cst.FunctionDef) and updated.name.value in self.dead:
            return self._drop("dropped the functions only what adopt removed called", updated.name.value)
        names = assigned_names(small)
        if self.depth == 0 and names and reads_gone and not set(names) & self.unprinted:
            return self._drop("dropped what was computed from what adopt removed, for prints", *names)
        if self.depth == 0 and names and all(n in self.dead for n in names) \
                and all(is_call_to(call, _PURE) for call in calls(small.value)):
            return self._drop("dropped what only fed what adopt removed", *names)
        if self.depth == 0 and isinstance(small, (cst.Import, cst.ImportFrom)) \
                and not isinstance(small.names, cst.ImportStar) and {bound_name(a) for a in small.names} <= self.dead:
            return self._drop("dropped the imports nothing uses any more", code(small))
        return None

    def _drop(self, why: str, *what: str) -> list[cst.BaseStatement]:
        self.dropped.setdefault(why, []).extend(what)
        return []
