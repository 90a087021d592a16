"""Combining two mutations of the same base: union, deduplication, 3-way merge, conflicts.

Disjoint edits combine in either order to the same source. Identical edits count once.
Two replacements of the same unit are merged against the base (their lowest common
ancestor) statement by statement inside the unit, recursing into a compound statement
(a loop, a with block) that both sides changed; only a true conflict is refused, and it
is reported with both sides.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass

import libcst as cst

from mutations.edits import Action, ApplyError, Edit, Mutation, apply_mutation
from mutations.units import Unit, addressable_units, as_statements
from trainer.program import SEPARATOR


@dataclass(frozen=True)
class Conflict:
    target: str
    reason: str
    ours: str
    theirs: str

    def __str__(self) -> str:
        return f"{self.target}: {self.reason}"


class MergeConflict(Exception):
    def __init__(self, conflict: Conflict) -> None:
        super().__init__(str(conflict))
        self.conflict = conflict


class _Clash(Exception):
    """Both sides changed the same statements differently."""


def _render(node: cst.CSTNode) -> str:
    return cst.Module(body=[]).code_for_node(node)


def _hunks(base: list, side: list) -> list[tuple[int, int, list]]:
    keys = [_render(s) for s in base], [_render(s) for s in side]
    matcher = difflib.SequenceMatcher(a=keys[0], b=keys[1], autojunk=False)
    return [(i1, i2, side[j1:j2]) for op, i1, i2, j1, j2 in matcher.get_opcodes() if op != "equal"]


def _overlap(h: tuple, g: tuple) -> bool:
    (a1, a2, _), (b1, b2, _) = h, g
    if a1 == a2 and b1 == b2:
        return a1 == b1
    if a1 == a2:
        return b1 < a1 < b2
    if b1 == b2:
        return a1 < b1 < a2
    return a1 < b2 and b1 < a2


def _same(h: tuple, g: tuple) -> bool:
    return h[:2] == g[:2] and [_render(s) for s in h[2]] == [_render(s) for s in g[2]]


def _combine(h: tuple, g: tuple, base: list) -> tuple[int, int, list]:
    if _same(h, g):
        return h
    (i1, i2, ours), (_, _, theirs) = h, g
    if i1 == i2:  # both insert at the same point: independent additions, ours first
        seen = {_render(s) for s in ours}
        return i1, i2, [*ours, *(s for s in theirs if _render(s) not in seen)]
    if h[:2] == g[:2] and i2 - i1 == 1 and len(ours) == len(theirs) == 1:
        return i1, i2, [merge_node(base[i1], ours[0], theirs[0])]
    raise _Clash(_render(base[i1]).strip().splitlines()[0] if i1 < len(base) else "the end")


def merge_sequences(base: list, ours: list, theirs: list) -> list:
    """diff3 over statement lists; _Clash when both sides change the same statements differently."""
    mine, other = _hunks(base, ours), _hunks(base, theirs)
    changes, i, j = [], 0, 0
    while i < len(mine) or j < len(other):
        if j == len(other) or (i < len(mine) and not _overlap(mine[i], other[j]) and mine[i][:2] < other[j][:2]):
            changes.append(mine[i])
            i += 1
        elif i == len(mine) or not _overlap(mine[i], other[j]):
            changes.append(other[j])
            j += 1
        else:
            if (j + 1 < len(other) and _overlap(mine[i], other[j + 1])) or \
                    (i + 1 < len(mine) and _overlap(mine[i + 1], other[j])):
                raise _Clash(_render(base[mine[i][0]]).strip().splitlines()[0])
            changes.append(_combine(mine[i], other[j], base))
            i, j = i + 1, j + 1
    merged, position = [], 0
    for i1, i2, replacement in changes:
        merged += base[position:i1] + replacement
        position = i2
    return merged + base[position:]


def _shell(node: cst.CSTNode) -> str:
    return _render(node.with_changes(body=node.body.with_changes(body=[cst.SimpleStatementLine([cst.Pass()])])))


def merge_node(base: cst.CSTNode, ours: cst.CSTNode, theirs: cst.CSTNode) -> cst.CSTNode:
    """3-way merge of one statement; compound statements merge their bodies recursively."""
    b, o, t = _render(base), _render(ours), _render(theirs)
    if o == b or o == t:
        return theirs
    if t == b:
        return ours
    blocks = [getattr(n, "body", None) for n in (base, ours, theirs)]
    if not all(isinstance(block, cst.IndentedBlock) for block in blocks) or len({type(n) for n in (base, ours, theirs)}) > 1:
        raise _Clash(b.strip().splitlines()[0])
    shells = [_shell(n) for n in (base, ours, theirs)]
    if shells[1] != shells[0] and shells[2] != shells[0] and shells[1] != shells[2]:
        raise _Clash(b.strip().splitlines()[0])
    host = ours if shells[1] != shells[0] else theirs
    body = merge_sequences(list(base.body.body), list(ours.body.body), list(theirs.body.body))
    return host.with_changes(body=host.body.with_changes(body=body))


def merge_code(base: str, ours: str, theirs: str) -> str:
    """3-way merge of a unit's code; _Clash on a true conflict."""
    merged = merge_sequences(as_statements(base), as_statements(ours), as_statements(theirs))
    return cst.Module(body=merged).code


def _slot(edit: Edit) -> str:
    return f"+{edit.target}" if edit.action is Action.INSERT else edit.target


def _owner(edit: Edit) -> str | None:
    return owning_class(edit.target)


def owning_class(target: str) -> str | None:
    """The class whose member an address names (`model.py::GPT` in a program's module), or None for
    a top-level unit."""
    file, separator, address = target.rpartition(SEPARATOR)
    if "." in address and not address.startswith("<"):
        return file + separator + address.split(".")[0]
    return None


def _lift(base: str, mutation: Mutation, owners: set[str]) -> Mutation:
    """Member edits of these classes as one replacement of each whole class, so they can be
    merged with a side that replaced the class (for instance only the comments above it)."""
    kept = [e for e in mutation.edits if _owner(e) not in owners]
    if len(kept) == len(mutation.edits):
        return mutation
    changed = addressable_units(apply_mutation(base, Mutation(tuple(e for e in mutation.edits if _owner(e) in owners))))
    original = addressable_units(base)
    lifted = [Edit(Action.REPLACE, owner, changed[owner].code, base_hash=original[owner].hash) for owner in sorted(owners)
              if owner in changed and owner in original]
    return Mutation((*kept, *lifted), mutation.name, mutation.description)


def merge(base: str, a: Mutation, b: Mutation) -> Mutation:
    """One mutation with the changes of both; MergeConflict naming the unit both change."""
    first, second = sorted((a, b), key=lambda mutation: mutation.key)  # order-independent result
    replaced = [{e.target for e in m.edits if e.action is Action.REPLACE and _owner(e) is None} for m in (first, second)]
    first, second = _lift(base, first, replaced[1]), _lift(base, second, replaced[0])
    units = addressable_units(base)
    slots = {_slot(e): e for e in first.edits}
    combined = list(first.edits)
    for edit in second.edits:
        mine = slots.get(_slot(edit))
        if mine is None:
            combined.append(edit)
        elif mine != edit:
            combined[combined.index(mine)] = _merge_edit(units, mine, edit)
    deleted = {e.target for e in combined if e.action is Action.DELETE}
    for edit in combined:
        if _owner(edit) in deleted:
            raise MergeConflict(Conflict(_owner(edit), f"one side deletes class {_owner(edit)}, the other edits "
                                         f"{edit.target}", _owner(edit), edit.target))
    merged = Mutation(tuple(combined), name=f"merge({first.name},{second.name})")
    try:
        apply_mutation(base, merged)
    except ApplyError as error:
        raise MergeConflict(Conflict("<module>", f"the combined edits do not apply: {error}", a.name, b.name)) from None
    return merged


def _merge_edit(units: dict[str, Unit], mine: Edit, theirs: Edit) -> Edit:
    if mine.action is Action.REPLACE and theirs.action is Action.REPLACE and mine.target in units:
        try:
            return Edit(Action.REPLACE, mine.target, merge_code(units[mine.target].code, mine.code, theirs.code),
                        base_hash=mine.base_hash)
        except _Clash as clash:
            raise MergeConflict(Conflict(mine.target, f"both sides change `{clash}`", mine.code, theirs.code)) from None
    what = "delete it" if Action.DELETE in (mine.action, theirs.action) else "add it differently"
    raise MergeConflict(Conflict(mine.target, f"both sides change it and one or both {what}", mine.code, theirs.code))
