"""Text forms of a change: unified diffs out, SEARCH/REPLACE blocks and whole files in.

Whatever a mutation source returns is normalised into node edits through the
structural diff, so every change in the system has one canonical form.
"""
from __future__ import annotations

import difflib
import re

import libcst as cst

from mutations.diff import structural_diff
from mutations.edits import Action, ApplyError, Edit, Mutation, apply_mutation
from mutations.units import addressable_units
from trainer.program import Program, is_multi_file

_BLOCK = re.compile(r"<{5,} SEARCH\n(.*?)\n?={5,}\n(.*?)\n?>{5,} REPLACE", re.DOTALL)


def unified_diff(base: str, new: str, path: str = "train.py") -> str:
    """A patch of base -> new that `git apply` accepts on the original file (`path`), or on the
    original files of a multi-file program (trainer.program), as one patch."""
    if is_multi_file(base) or is_multi_file(new):
        before, after = Program.parse(base), Program.parse(new)
        return "".join(_file_diff(before.source(name), after.source(name), name) for name in before.names)
    return _file_diff(base, new, path)


def _file_diff(base: str, new: str, path: str) -> str:
    lines = list(difflib.unified_diff(base.splitlines(keepends=True), new.splitlines(keepends=True),
                                      fromfile=f"a/{path}", tofile=f"b/{path}"))
    if not lines:
        return ""
    out = [f"diff --git a/{path} b/{path}\n"]
    for line in lines:
        out.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return "".join(out)


def from_search_replace(base: str, text: str, name: str = "") -> Mutation:
    """Apply aider-style SEARCH/REPLACE blocks in order, then diff structurally."""
    blocks = _BLOCK.findall(text)
    if not blocks:
        raise ApplyError("no_blocks", "no SEARCH/REPLACE blocks found")
    program = Program.parse(base)
    files = dict(program.files)
    for number, (search, replacement) in enumerate(blocks, 1):  # a block edits the one file that holds its text
        count = sum(source.count(search) for source in files.values())
        if count != 1:
            where = "not found" if count == 0 else f"found {count} times; include more context"
            raise ApplyError("search_mismatch", f"SEARCH block {number} {where}: {search.strip().splitlines()[0]!r}")
        file = next(name for name, source in files.items() if search in source)
        files[file] = files[file].replace(search, replacement, 1)
    return from_source(base, program.with_sources(files).text, name)


def from_source(base: str, new: str, name: str = "") -> Mutation:
    """The canonical node edits for a whole new file (or every file of a new program)."""
    for file, source in Program.parse(new).files:
        try:
            cst.parse_module(source)
        except cst.ParserSyntaxError as error:
            raise ApplyError("syntax", f"the new {file} does not parse: {error.message} (line {error.raw_line})") from None
    mutation = structural_diff(base, new, name=name)
    if not mutation.edits:
        raise ApplyError("noop", "the new file is identical to the base")
    return mutation


def from_node_edits(base: str, edits: list[dict], name: str = "") -> Mutation:
    """Edits as a mutation source writes them (target, action, code, after; no hashes):
    hashes are taken from the base, the result applied, and the change re-diffed canonically."""
    units = addressable_units(base)
    filled = []
    for raw in edits:
        action = Action(raw.get("action", "replace"))
        target = raw["target"]
        if action is not Action.INSERT and target not in units:
            known = difflib.get_close_matches(target, list(units), n=3)
            raise ApplyError("missing_target", f"no {target} in this file" + (f"; did you mean {', '.join(known)}?" if known else ""))
        code = raw.get("code", "")
        if code and not code.endswith("\n"):
            code += "\n"
        base_hash = units[target].hash if action is not Action.INSERT else ""
        filled.append(Edit(action, target, code, base_hash=base_hash, after=raw.get("after", "")))
    return from_source(base, apply_mutation(base, Mutation(tuple(filled))), name)

