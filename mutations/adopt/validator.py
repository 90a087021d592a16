"""What evotrain's variant validator forbids and adopt can drop or rename: environment settings (the runner
sets the environment), gc tuning (gc is introspection), and a variable that shadows the builtin compile."""
from __future__ import annotations

import libcst as cst
import libcst.matchers as m

from mutations.adopt.notes import Notes
from mutations.adopt.syntax import (
    BlockTransformer,
    assigned_names,
    dotted,
    is_call_to,
    only_small,
)

_RENAMED = {"compile": "compile_model"}   # nanoGPT's config flag, named like a forbidden builtin


def rewrite_forbidden(module: cst.Module, notes: Notes) -> cst.Module:
    module = module.visit(_Drop(notes))
    bound = {name for line in module.body for name in assigned_names(only_small(line))}
    for old, new in _RENAMED.items():
        if old in bound:
            notes.did(f"renamed {old} to {new}: the validator refuses the name of the builtin")
            module = module.visit(_Rename(old, new))
    return module


class _Drop(BlockTransformer):
    def __init__(self, notes: Notes) -> None:
        self.notes = notes

    def visit_If(self, node: cst.If) -> bool:
        return not _only_gc(node)  # dropped whole by its block, not emptied first

    def change(self, node: cst.BaseStatement) -> list[cst.BaseStatement] | None:
        small = only_small(node)
        if isinstance(small, cst.Assign) and any(dotted(t.target.value) == "os.environ" for t in small.targets
                                                 if isinstance(t.target, cst.Subscript)):
            self.notes.did("removed os.environ settings: a variant does not touch the environment")
            return []
        if _only_gc(node):
            self.notes.did("removed the gc tuning: the validator refuses gc (introspection)")
            return []
        return None


def _only_gc(node: cst.CSTNode) -> bool:
    """A gc.* call, or an if/elif/else whose every statement is one."""
    if isinstance(node, (cst.If, cst.Else)):
        rest = getattr(node, "orelse", None)
        return all(_only_gc(s) for s in node.body.body) and (rest is None or _only_gc(rest))
    small = only_small(node) if isinstance(node, cst.SimpleStatementLine) else node
    return m.matches(small, m.Expr(m.Call())) and is_call_to(small.value, {"gc.collect", "gc.freeze", "gc.disable",
                                                                          "gc.enable"})


class _Rename(cst.CSTTransformer):
    def __init__(self, old: str, new: str) -> None:
        self.old, self.new = old, new

    def leave_Attribute(self, original: cst.Attribute, updated: cst.Attribute) -> cst.Attribute:
        return updated.with_changes(attr=original.attr)  # `torch.compile` keeps its name

    def leave_Arg(self, original: cst.Arg, updated: cst.Arg) -> cst.Arg:
        return updated.with_changes(keyword=original.keyword)  # and so do keywords

    def leave_Name(self, original: cst.Name, updated: cst.Name) -> cst.Name:
        return updated.with_changes(value=self.new) if updated.value == self.old else updated
