"""Addressable units of a Python module: what an edit can name.

A module is read as a sequence of units, each one or more top-level statements:

* `<module>`: the header comments, docstring and leading imports, as one unit;
* named units: a function or class by its name (`GPT`, `make_optimizer`), a single-name
  assignment by that name (`DEPTH`); members of a class as `Class.member`;
* unnamed units: any other statement (the training loop at module level, a bare call),
  addressed by position among the unnamed siblings, `<stmt@2>`, and checked by hash;
* `<footer>`: trailing comments after the last statement (possibly none).

A unit's code is its exact text, leading blank lines and comments included, dedented for
class members; joining the codes of all units gives back the file byte for byte.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from functools import lru_cache

import libcst as cst
import libcst.matchers as m

from trainer.program import Program, is_multi_file

MODULE = "<module>"
FOOTER = "<footer>"
START = "<start>"  # insert anchor: the very beginning of a class body

Statement = cst.SimpleStatementLine | cst.BaseCompoundStatement


def code_hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Unit:
    address: str
    code: str
    nodes: tuple[Statement, ...]
    named: bool

    @property
    def hash(self) -> str:
        return code_hash(self.code)

    @property
    def key(self) -> str:
        """What aligns a unit with its counterpart in another version: its address, or for an
        unnamed statement its text without the blank lines and comments above it."""
        if self.named:
            return self.address
        bare = [node.with_changes(leading_lines=()) for node in self.nodes]
        return "#" + code_hash(cst.Module(body=bare).code)


def statement_name(statement: cst.CSTNode) -> str | None:
    """The name a statement defines, if it defines exactly one."""
    if isinstance(statement, (cst.FunctionDef, cst.ClassDef)):
        return statement.name.value
    if m.matches(statement, m.SimpleStatementLine(body=[m.Assign(targets=[m.AssignTarget(target=m.Name())])])):
        return statement.body[0].targets[0].target.value
    if m.matches(statement, m.SimpleStatementLine(body=[m.AnnAssign(target=m.Name()) | m.AugAssign(target=m.Name())])):
        return statement.body[0].target.value
    return None


def _is_header_statement(statement: cst.CSTNode) -> bool:
    return m.matches(statement, m.SimpleStatementLine(body=[m.Import() | m.ImportFrom() | m.Expr(m.SimpleString())]))


def _sequence_units(module: cst.Module, statements: list[Statement], prefix: str) -> list[Unit]:
    units: list[Unit] = []
    unnamed = 0
    seen: dict[str, int] = {}
    for statement in statements:
        name = statement_name(statement)
        code = module.code_for_node(statement)
        if name is None:
            units.append(Unit(f"{prefix}<stmt@{unnamed}>", code, (statement,), named=False))
            unnamed += 1
            continue
        seen[name] = seen.get(name, 0) + 1
        # a name bound twice at one level: the later binding is NAME#2, and so on
        address = prefix + name + (f"#{seen[name]}" if seen[name] > 1 else "")
        units.append(Unit(address, code, (statement,), named=True))
    return units


def module_units(module: cst.Module) -> list[Unit]:
    """Top-level units in order: `<module>`, one per statement, `<footer>` (both may be empty)."""
    return list(_module_units(module))


@lru_cache(maxsize=64)
def _module_units(module: cst.Module) -> tuple[Unit, ...]:
    """module_units, remembered per tree (libcst nodes hash by identity; parse_module hands out the same tree)."""
    body = list(module.body)
    lead = 0
    while lead < len(body) and _is_header_statement(body[lead]):
        lead += 1
    header_code = "".join(module.code_for_node(line) for line in module.header)
    header_code += "".join(module.code_for_node(s) for s in body[:lead])
    units = [Unit(MODULE, header_code, tuple(body[:lead]), named=True)]
    units += _sequence_units(module, body[lead:], "")
    footer = "".join(module.code_for_node(line) for line in module.footer)
    return (*units, Unit(FOOTER, footer, (), named=True))  # always there, so trailing comments are a replace


def class_members(module: cst.Module, node: cst.ClassDef) -> list[Unit] | None:
    """Units of a class body (`Class.member`), or None for a one-line class body."""
    if not isinstance(node.body, cst.IndentedBlock):
        return None
    return _sequence_units(module, list(node.body.body), node.name.value + ".")


def addressable_units(source: str) -> dict[str, Unit]:
    """Every unit an edit can name, class members included, by address (`model.py::GPT` for a
    unit of a program's module other than its script)."""
    if is_multi_file(source):
        program = Program.parse(source)
        return {program.qualify(name, address): replace(unit, address=program.qualify(name, address))
                for name, text in program.files for address, unit in addressable_units(text).items()}
    module = cst.parse_module(source)
    units: dict[str, Unit] = {}
    for unit in module_units(module):
        units[unit.address] = unit
        if unit.nodes and isinstance(unit.nodes[0], cst.ClassDef):
            units.update({u.address: u for u in class_members(module, unit.nodes[0]) or ()})
    return units


def class_shell(module: cst.Module, node: cst.ClassDef) -> str:
    """A class's code without its members: decorators, bases, leading lines, trailing comments."""
    if not isinstance(node.body, cst.IndentedBlock):
        return module.code_for_node(node)
    return module.code_for_node(node.with_changes(body=node.body.with_changes(body=[])))


def parse_statements(code: str) -> tuple[list[cst.EmptyLine], list[Statement], list[cst.EmptyLine]]:
    """Header lines, statements and footer lines of a unit's code."""
    parsed = parse_module(code)
    return list(parsed.header), list(parsed.body), list(parsed.footer)


@lru_cache(maxsize=512)
def parse_module(source: str) -> cst.Module:
    """cst.parse_module, remembered: libcst trees are immutable, and a search parses the same baseline and the same
    edits' code thousands of times (stacks of atoms are rebuilt from them)."""
    return cst.parse_module(source)


def as_statements(code: str) -> list[Statement]:
    """Statements of a unit's code with leading comments and blank lines kept on the first."""
    header, body, footer = parse_statements(code)
    if footer:
        raise ValueError("a unit's code cannot end with comments after its last statement")
    if body and header:
        body[0] = body[0].with_changes(leading_lines=[*header, *body[0].leading_lines])
    elif header:
        raise ValueError("a unit's code has comments but no statement")
    return [s.with_changes(leading_lines=_unindented_blanks(s.leading_lines)) for s in body]


def _unindented_blanks(lines) -> list[cst.EmptyLine]:
    """Blank lines parsed at module level claim indentation; inside a class they must not have it."""
    return [line.with_changes(indent=False) if line.comment is None and not line.whitespace.value else line
            for line in lines]
