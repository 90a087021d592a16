"""libcst helpers shared by catalog moves: constants, imports, helper definitions, lookups."""
from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence

import libcst as cst
import libcst.matchers as m

from mutations.catalog._base import NotApplicable

Statement = cst.SimpleStatementLine | cst.BaseCompoundStatement


def expr(code: str) -> cst.BaseExpression:
    return cst.parse_expression(code)


def statements(code: str) -> list[Statement]:
    """Statements parsed from (possibly indented) code, leading comments and blank lines kept."""
    module = cst.parse_module(textwrap.dedent(code).strip("\n") + "\n")
    body = list(module.body)
    if body and module.header:
        body[0] = body[0].with_changes(leading_lines=[*module.header, *body[0].leading_lines])
    return body


def code(node: cst.CSTNode) -> str:
    """A node's source text."""
    return cst.Module([]).code_for_node(node)


def methods(cls: cst.ClassDef) -> list[cst.FunctionDef]:
    """The methods of a class with an indented body."""
    return [s for s in cls.body.body if isinstance(s, cst.FunctionDef) and isinstance(s.body, cst.IndentedBlock)]


def assigned_name(statement: cst.CSTNode) -> str | None:
    """The name a `name = value` statement assigns, else None."""
    if m.matches(statement, m.SimpleStatementLine(body=[m.Assign(targets=[m.AssignTarget(target=m.Name())])])):
        return statement.body[0].targets[0].target.value
    return None


def constant_value(module: cst.Module, name: str) -> cst.BaseExpression | None:
    """The value assigned to a module-level name, or None."""
    for statement in module.body:
        if assigned_name(statement) == name:
            return statement.body[0].value
    return None


def is_pick(node: cst.CSTNode) -> bool:
    """`runtime.pick(cpu=..., cuda=...)`: one value per kind of device."""
    return m.matches(node, m.Call(func=m.Attribute(value=m.Name("runtime"), attr=m.Name("pick"))))


def map_constant(module: cst.Module, name: str,
                 change: Callable[[cst.BaseExpression], cst.BaseExpression]) -> cst.Module:
    """Rewrite a module-level constant's value; inside runtime.pick(...) every device's value."""
    value = constant_value(module, name)
    if value is None:
        raise NotApplicable(f"no module-level constant {name}")

    def rewrite(statement: cst.CSTNode) -> cst.CSTNode:
        if assigned_name(statement) != name:
            return statement
        assign = statement.body[0]
        if is_pick(assign.value):
            args = [a.with_changes(value=change(a.value)) for a in assign.value.args]
            new_value = assign.value.with_changes(args=args)
        else:
            new_value = change(assign.value)
        return statement.with_changes(body=[assign.with_changes(value=new_value)])

    return module.with_changes(body=[rewrite(s) for s in module.body])


def set_constant(module: cst.Module, name: str, code: str) -> cst.Module:
    return map_constant(module, name, lambda _old: expr(code))


def add_constants(module: cst.Module, constants: Sequence[tuple[str, str, str]]) -> cst.Module:
    """Add `NAME = value  # comment` lines after the last module-level UPPER_CASE constant."""
    for name, _, _ in constants:
        if constant_value(module, name) is not None:
            raise NotApplicable(f"{name} is already defined")
    body = list(module.body)
    upper = [i for i, s in enumerate(body) if (n := assigned_name(s)) and n.isupper()]
    at = upper[-1] + 1 if upper else _after_imports(body)
    new = [statements(f"{name} = {value}  # {comment}")[0] for name, value, comment in constants]
    return module.with_changes(body=[*body[:at], *new, *body[at:]])


def _after_imports(body: list[Statement]) -> int:
    at = 0
    for i, statement in enumerate(body):
        if m.matches(statement, m.SimpleStatementLine(body=[m.Import() | m.ImportFrom()])):
            at = i + 1
    return at


def ensure_import(module: cst.Module, code: str) -> cst.Module:
    """Add an import statement after the last top-level import unless the same line is there."""
    line = code.strip()
    if any(module.code_for_node(s).strip() == line for s in module.body):
        return module
    body = list(module.body)
    at = _after_imports(body)
    return module.with_changes(body=[*body[:at], *statements(line), *body[at:]])


def insert_definitions(module: cst.Module, code: str) -> cst.Module:
    """Add helper functions or classes just before the first top-level class or function."""
    body = list(module.body)
    at = next((i for i, s in enumerate(body) if isinstance(s, (cst.ClassDef, cst.FunctionDef))), len(body))
    new = statements(code)
    blank = cst.EmptyLine()
    new = [s.with_changes(leading_lines=[blank, blank, *s.leading_lines]) for s in new]
    if at < len(body):
        body[at] = body[at].with_changes(leading_lines=[blank, blank, *_strip_blank(body[at].leading_lines)])
    return module.with_changes(body=[*body[:at], *new, *body[at:]])


def _strip_blank(lines: Sequence[cst.EmptyLine]) -> list[cst.EmptyLine]:
    lines = list(lines)
    while lines and lines[0].comment is None:
        lines.pop(0)
    return lines


def defines(module: cst.Module, name: str) -> bool:
    """True when a top-level class or function of that name exists."""
    return any(isinstance(s, (cst.ClassDef, cst.FunctionDef)) and s.name.value == name for s in module.body)


def contains(node: cst.CSTNode, matcher: m.BaseMatcherNode) -> bool:
    return bool(m.findall(node, matcher))


def classes_containing(module: cst.Module, matcher: m.BaseMatcherNode) -> list[cst.ClassDef]:
    return [s for s in module.body if isinstance(s, cst.ClassDef) and contains(s, matcher)]


def replace_class(module: cst.Module, name: str, new: cst.ClassDef) -> cst.Module:
    return module.with_changes(body=[new if isinstance(s, cst.ClassDef) and s.name.value == name else s
                                     for s in module.body])
