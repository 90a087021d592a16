"""Structural diff: the canonical node edits that turn one source into another.

Units (see mutations.units) of both sources are aligned with difflib over their keys (the
address of a named unit, the hash of an unnamed one), so an edit inside the module-level
training loop stays a small unit edit instead of a whole-file replacement. A class whose
shell (decorators, bases) is unchanged is diffed member by member.
"""
from __future__ import annotations

import difflib

import libcst as cst

from mutations.edits import Action, ApplyError, Edit, Mutation, apply_mutation
from trainer.program import Program, is_multi_file
from mutations.units import START, Unit, class_members, class_shell, module_units


def _unit_edits(base_module: cst.Module, new_module: cst.Module, base: list[Unit], new: list[Unit],
                scope: str, members: bool = True) -> list[Edit]:
    edits: list[Edit] = []
    anchor = scope + START
    matcher = difflib.SequenceMatcher(a=[u.key for u in base], b=[u.key for u in new], autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            for old, now in zip(base[i1:i2], new[j1:j2]):
                if old.code != now.code:
                    edits += _changed(base_module, new_module, old, now, members)
            anchor = base[i2 - 1].address
            continue
        old_units, new_units = base[i1:i2], new[j1:j2]
        pairs = _pair_unnamed(old_units, new_units)
        paired_old = {id(o) for o, _ in pairs}
        paired_new = {id(n): o for o, n in pairs}
        for old in old_units:
            if id(old) not in paired_old:
                edits.append(Edit(Action.DELETE, old.address, base_hash=old.hash))
        for now in new_units:
            if id(now) in paired_new:
                old = paired_new[id(now)]
                edits.append(Edit(Action.REPLACE, old.address, now.code, base_hash=old.hash))
                anchor = old.address
            else:
                target = now.address if now.named else f"{scope}<new:{now.hash}>"
                edits.append(Edit(Action.INSERT, target, now.code, after=anchor))
    return edits


def _pair_unnamed(old_units: list[Unit], new_units: list[Unit]) -> list[tuple[Unit, Unit]]:
    """Unnamed statements that were edited rather than replaced: each old one with its most
    similar new one, in order, so a changed training loop stays a replace of `<stmt@k>`."""
    pairs, start = [], 0
    candidates = [n for n in new_units if not n.named]
    for old in (o for o in old_units if not o.named):
        scored = [(difflib.SequenceMatcher(a=old.code, b=n.code).ratio(), i) for i, n in enumerate(candidates[start:], start)]
        if scored and (best := max(scored))[0] > 0.5:
            pairs.append((old, candidates[best[1]]))
            start = best[1] + 1
    return pairs


def _changed(base_module: cst.Module, new_module: cst.Module, old: Unit, now: Unit, members: bool) -> list[Edit]:
    """Edits for one unit present in both: member edits for a class whose shell is unchanged."""
    old_node, new_node = (old.nodes[0] if old.nodes else None), (now.nodes[0] if now.nodes else None)
    if members and isinstance(old_node, cst.ClassDef) and isinstance(new_node, cst.ClassDef) \
            and class_shell(base_module, old_node) == class_shell(new_module, new_node):
        old_members, new_members = class_members(base_module, old_node), class_members(new_module, new_node)
        if old_members is not None and new_members is not None:
            return _unit_edits(base_module, new_module, old_members, new_members, old.address + ".")
    return [Edit(Action.REPLACE, old.address, now.code, base_hash=old.hash)]


def structural_diff(base: str, new: str, name: str = "", description: str = "") -> Mutation:
    """The node edits from base to new; apply_mutation(base, result) == new, byte for byte.
    Of two programs (trainer.program) with the same files, the edits of every file that changed."""
    if is_multi_file(base) or is_multi_file(new):
        return _program_diff(Program.parse(base), Program.parse(new), name, description)
    base_module, new_module = cst.parse_module(base), cst.parse_module(new)
    for members in (True, False):
        edits = _unit_edits(base_module, new_module, module_units(base_module), module_units(new_module), "", members)
        mutation = Mutation(tuple(edits), name, description)
        # Dedented member code cannot say that a comment inside a class sits at column 0;
        # when that loses a byte, the whole class is the unit instead.
        if not edits or apply_mutation(base, mutation) == new:
            return mutation
    raise AssertionError(f"structural diff does not round-trip for {name or 'a mutation'}")


def _program_diff(base: Program, new: Program, name: str, description: str) -> Mutation:
    if base.names != new.names:
        raise ApplyError("files", f"a change cannot add, remove or rename files ({', '.join(base.names)} became "
                                  f"{', '.join(new.names)}); change the code inside them")
    edits = [edit.qualified(base, file) for (file, old), (_, now) in zip(base.files, new.files) if old != now
             for edit in structural_diff(old, now).edits]
    return Mutation(tuple(edits), name, description)


def invert(base: str, mutation: Mutation) -> Mutation:
    """The mutation that undoes `mutation` on top of base."""
    changed = apply_mutation(base, mutation)
    return structural_diff(changed, base, name=f"revert:{mutation.name}")

