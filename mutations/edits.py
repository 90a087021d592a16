"""Edits and mutations, and applying them with libcst.

An edit names one unit (see mutations.units), carries the hash of the code it replaces,
and the new code of that unit; inserts name an anchor unit of the base to follow. A
mutation is a list of edits. Applying one either gives the new source, with every byte
outside the edited units unchanged, or fails with a reason naming the target: nothing is
skipped silently, and a mutation that changes nothing is refused.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from enum import Enum

import libcst as cst

from trainer.program import Program, is_multi_file
from mutations.units import (FOOTER, MODULE, START, Unit, as_statements, class_members, module_units, parse_module,
                             parse_statements)


class Action(str, Enum):
    REPLACE = "replace"
    INSERT = "insert"
    DELETE = "delete"


@dataclass(frozen=True)
class Edit:
    action: Action
    target: str          # the unit replaced or deleted, or the name of the unit inserted
    code: str = ""       # new code of the unit (replace, insert), dedented
    base_hash: str = ""  # hash of the code replaced or deleted: a stale edit fails instead of misapplying
    after: str = ""      # insert: the unit of the base it follows (`Class.<start>` for a class body's top)

    def to_dict(self) -> dict:
        return {**asdict(self), "action": self.action.value}

    def in_file(self, program: Program) -> Edit:
        """This edit with its addresses inside its file (`model.py::GPT` -> `GPT`)."""
        name, target = program.locate(self.target)
        after_file, after = program.locate(self.after) if self.after else (name, "")
        if after_file != name:
            raise ApplyError("missing_target", f"{self.target} is inserted after {self.after}, in another file")
        return replace(self, target=target, after=after)

    def qualified(self, program: Program, name: str) -> Edit:
        """This edit of file `name` with addresses that say so."""
        return replace(self, target=program.qualify(name, self.target),
                       after=program.qualify(name, self.after) if self.after else "")

    @classmethod
    def from_dict(cls, data: dict) -> Edit:
        return cls(**{**data, "action": Action(data["action"])})


@dataclass(frozen=True)
class Mutation:
    edits: tuple[Edit, ...]
    name: str = ""         # where it came from: "catalog:rmsnorm", "llm:MODEL", "merge", ...
    description: str = ""

    @property
    def key(self) -> str:
        """Identity of the change itself (not of its name): equal edits, equal key."""
        text = json.dumps([e.to_dict() for e in self.edits], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def targets(self) -> frozenset[str]:
        return frozenset(e.target for e in self.edits)

    def named(self, name: str, description: str = "") -> Mutation:
        return replace(self, name=name, description=description or self.description)

    def to_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "edits": [e.to_dict() for e in self.edits]}

    @classmethod
    def from_dict(cls, data: dict) -> Mutation:
        return cls(tuple(Edit.from_dict(e) for e in data["edits"]), data.get("name", ""), data.get("description", ""))


class ApplyError(Exception):
    """A mutation that cannot apply; `reason` is a stable code, the message names the target."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _resolve(units: list[Unit], address: str) -> Unit:
    """The unit an address names; an unnamed `<stmt@k>` whose hash moved is found by hash."""
    for unit in units:
        if unit.address == address:
            return unit
    raise ApplyError("missing_target", f"no {address} in this file")


def _check_hash(units: list[Unit], edit: Edit) -> Unit:
    unit = _resolve(units, edit.target)
    if not edit.base_hash or unit.hash == edit.base_hash:
        return unit
    if not unit.named:
        same = [u for u in units if not u.named and u.hash == edit.base_hash]
        if len(same) == 1:
            return same[0]
    raise ApplyError("stale_target", f"{edit.target} has changed since the edit was made (hash {unit.hash}, "
                                     f"expected {edit.base_hash})")


def _rebuild(units: list[Unit], edits: list[Edit], scope: str) -> list[tuple[str | None, Unit | str]]:
    """The new sequence as (base address or None for an insert, kept unit or new code)."""
    replaced: dict[str, Edit] = {}
    dropped: set[str] = set()
    for edit in edits:
        if edit.action is Action.INSERT:
            continue
        unit = _check_hash(units, edit)
        if unit.address in replaced or unit.address in dropped:
            raise ApplyError("duplicate_target", f"two edits of {unit.address}")
        if edit.action is Action.REPLACE:
            replaced[unit.address] = edit
        else:
            dropped.add(unit.address)
    existing = {u.address for u in units if u.named} - dropped
    inserts: dict[str, list[Edit]] = {}
    for edit in edits:
        if edit.action is not Action.INSERT:
            continue
        if edit.target in existing:
            raise ApplyError("already_exists", f"{edit.target} already exists; replace it instead of inserting it")
        anchor = edit.after or scope + START
        if anchor != scope + START:
            _resolve(units, anchor)
        inserts.setdefault(anchor, []).append(edit)
    out: list[tuple[str | None, Unit | str]] = [(None, e.code) for e in inserts.pop(scope + START, [])]
    for unit in units:
        if unit.address in replaced:
            out.append((unit.address, replaced[unit.address].code))
        elif unit.address not in dropped:
            out.append((unit.address, unit))
        out.extend((None, e.code) for e in inserts.pop(unit.address, []))
    return out


def _statements(item: Unit | str) -> list:
    return list(item.nodes) if isinstance(item, Unit) else as_statements(item)


def _is_member(address: str) -> bool:
    return "." in address and not address.startswith("<")


def apply_mutation(source: str, mutation: Mutation) -> str:
    """The source with the mutation applied; ApplyError with a reason when it cannot be.

    `source` may be a multi-file program's text (trainer.program): each edit applies to the
    file its address names."""
    if not mutation.edits:
        raise ApplyError("noop", "the mutation has no edits")
    if not is_multi_file(source):
        return _apply_to_file(source, mutation)
    program = Program.parse(source)
    try:
        grouped = {name: Mutation(tuple(edit.in_file(program) for edit in edits))
                   for name, edits in program.group(mutation.edits, lambda edit: edit.target).items()}
    except KeyError as error:
        raise ApplyError("missing_target", str(error.args[0])) from None
    changed = {}
    for name, local in grouped.items():
        try:
            changed[name] = _apply_to_file(program.source(name), local)
        except ApplyError as error:
            raise ApplyError(error.reason, f"{name}: {error}") from None
    return program.with_sources(changed).text


def _apply_to_file(source: str, mutation: Mutation) -> str:
    try:
        module = parse_module(source)
    except cst.ParserSyntaxError as error:
        raise ApplyError("syntax", f"the base does not parse: {error.message}") from None
    top = [e for e in mutation.edits if not _is_member(e.target)]
    members: dict[str, list[Edit]] = {}
    for edit in mutation.edits:
        if _is_member(edit.target):
            members.setdefault(edit.target.split(".")[0], []).append(edit)
    try:
        new = _assemble(module, top, members).code
    except (cst.ParserSyntaxError, ValueError) as error:
        raise ApplyError("syntax", f"an edit's code does not parse: {error}") from None
    if new == source:
        raise ApplyError("noop", "the mutation changes nothing")
    return new


def _assemble(module: cst.Module, top: list[Edit], members: dict[str, list[Edit]]) -> cst.Module:
    header: list = []
    footer: list = []
    body: list = []
    for address, item in _rebuild(module_units(module), top, ""):
        if address == MODULE:
            if isinstance(item, Unit):
                header, statements = list(module.header), list(item.nodes)
            else:
                header, statements, _ = parse_statements(item)
            body.extend(statements)
        elif address == FOOTER:
            footer = list(module.footer) if isinstance(item, Unit) else list(cst.parse_module(item).header)
        elif address in members:
            body.append(_edit_class(module, item, members.pop(address)))
        else:
            body.extend(_statements(item))
    if members:
        owner, edits = sorted(members.items())[0]
        raise ApplyError("missing_target", f"no {edits[0].target} in this file (there is no class {owner})")
    return module.with_changes(header=header, body=body, footer=footer)


def _edit_class(module: cst.Module, item: Unit | str, edits: list[Edit]) -> cst.ClassDef:
    if not isinstance(item, Unit):
        raise ApplyError("duplicate_target", f"class {edits[0].target.split('.')[0]} is replaced and its members edited")
    node = item.nodes[0]
    if not isinstance(node, cst.ClassDef):
        raise ApplyError("missing_target", f"{item.address} is not a class, so it has no members")
    members = class_members(module, node)
    if members is None:
        raise ApplyError("missing_target", f"class {item.address} has a one-line body")
    body = [s for _, kept in _rebuild(members, edits, item.address + ".") for s in _statements(kept)]
    return node.with_changes(body=node.body.with_changes(body=body))
