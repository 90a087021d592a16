"""Small questions about libcst nodes that every pass asks."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import libcst as cst
import libcst.matchers as m
from libcst.metadata import MetadataWrapper, ScopeProvider

_EMPTY = cst.Module(body=[])


def code(node: cst.CSTNode) -> str:
    return _EMPTY.code_for_node(node)


def expr(text: str) -> cst.BaseExpression:
    return cst.parse_expression(text)


def statement(text: str) -> cst.BaseStatement:
    return cst.parse_statement(text)


def dotted(node: cst.CSTNode) -> str | None:
    """`torch.cuda.synchronize` for the attribute chain, None for anything else."""
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        base = dotted(node.value)
        return None if base is None else f"{base}.{node.attr.value}"
    return None


def calls(node: cst.CSTNode) -> list[cst.Call]:
    return list(m.findall(node, m.Call()))


def is_call_to(call: cst.Call, names: set[str]) -> bool:
    """True when call's function is one of names, given in full (`torch.save`) or by last part (`.zero_grad`)."""
    name = dotted(call.func)
    return name is not None and (name in names or "." + name.rsplit(".", 1)[-1] in names)


def calls_any(node: cst.CSTNode, names: set[str]) -> bool:
    """True when node calls one of names anywhere inside it."""
    return any(is_call_to(call, names) for call in calls(node))


def assigned_names(node: cst.CSTNode) -> list[str]:
    """The plain names an assignment binds (`a, b = ...` -> [a, b]); [] for anything else."""
    if not isinstance(node, cst.Assign):
        return []
    names = []
    for target in node.targets:
        parts = [e.value for e in target.target.elements] if isinstance(target.target, (cst.Tuple, cst.List)) \
            else [target.target]
        names += [part.value for part in parts if isinstance(part, cst.Name)]
    return names


def bound_name(alias: cst.ImportAlias) -> str:
    """The name an import binds: `np` for `import numpy as np`, `os` for `import os.path`."""
    bound = alias.asname.name if alias.asname else alias.name
    return bound.value if isinstance(bound, cst.Name) else dotted(bound).split(".")[0]


def only_small(node: cst.CSTNode) -> cst.BaseSmallStatement | None:
    """The one small statement of a simple statement line (`x = 1`), or None."""
    if isinstance(node, cst.SimpleStatementLine) and len(node.body) == 1:
        return node.body[0]
    return None


def references(module: cst.Module) -> dict[str, int]:
    """How often each name is read anywhere in module (scope-aware: keywords and attributes are not reads)."""
    scopes = MetadataWrapper(module, unsafe_skip_copy=True).resolve(ScopeProvider)
    counts: dict[str, int] = {}
    for scope in {s for s in scopes.values() if s is not None}:
        for access in scope.accesses:
            if isinstance(access.node, cst.Name):
                counts[access.node.value] = counts.get(access.node.value, 0) + 1
    for update in m.findall(module, m.AugAssign(target=m.Name())):  # `total += dt` reads total too
        counts[update.target.value] = counts.get(update.target.value, 0) + 1
    return counts


def names_in(node: cst.CSTNode) -> set[str]:
    """The names node mentions, without attribute names (`x.name`) and keywords (`f(name=...)`)."""
    visitor = _Names()
    node.visit(visitor)
    return visitor.names


class _Names(cst.CSTVisitor):
    def __init__(self) -> None:
        self.names: set[str] = set()

    def visit_Name(self, node: cst.Name) -> None:
        self.names.add(node.value)

    def visit_Attribute(self, node: cst.Attribute) -> bool:
        node.value.visit(self)
        return False

    def visit_Arg(self, node: cst.Arg) -> bool:
        node.value.visit(self)
        return False


def unresolved(module: cst.Module) -> list[cst.Name]:
    """The names read in module that nothing binds (not even a builtin)."""
    scopes = MetadataWrapper(module, unsafe_skip_copy=True).resolve(ScopeProvider)
    return [access.node for scope in {s for s in scopes.values() if s is not None} for access in scope.accesses
            if isinstance(access.node, cst.Name) and not access.referents]


def rebuild(body: Sequence[cst.BaseStatement],
            change: Callable[[cst.BaseStatement], list[cst.BaseStatement] | None]) -> list[cst.BaseStatement]:
    """body with each statement kept (change gives None) or replaced by the statements change gives.

    The comments above a removed statement go with it, unless a blank line parts them from it: those head a
    section, and the next statement kept takes them. A statement replaced keeps its own leading lines."""
    out: list[cst.BaseStatement] = []
    section: list[cst.EmptyLine] = []
    for node in body:
        new = change(node)
        if new is None:
            new = [node]
        elif not new:
            blank = [i for i, line in enumerate(node.leading_lines) if line.comment is None]
            section = _paragraph(section, node.leading_lines[:blank[-1] + 1] if blank else [])
            continue
        else:
            new = [new[0].with_changes(leading_lines=node.leading_lines), *new[1:]]
        if section:
            new[0] = new[0].with_changes(leading_lines=[*_paragraph(section, new[0].leading_lines)])
            section = []
        out += new
    return out


def _paragraph(section: list[cst.EmptyLine], own: Sequence[cst.EmptyLine]) -> list[cst.EmptyLine]:
    """Two runs of leading lines as one, without doubling the blank line between them."""
    if own and own[0].comment is None and section and section[-1].comment is None:
        return [*section, *own[1:]]
    return [*section, *own]


class BlockTransformer(cst.CSTTransformer):
    """A transformer that keeps, drops or replaces whole statements of every block through rebuild."""

    def change(self, node: cst.BaseStatement) -> list[cst.BaseStatement] | None:
        raise NotImplementedError

    def leave_Module(self, original: cst.Module, updated: cst.Module) -> cst.Module:
        return updated.with_changes(body=rebuild(updated.body, self.change))

    def leave_IndentedBlock(self, original: cst.IndentedBlock, updated: cst.IndentedBlock) -> cst.IndentedBlock:
        return updated.with_changes(body=rebuild(updated.body, self.change) or [statement("pass")])
