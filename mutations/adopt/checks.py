"""Refusals found on the adopted script: uses of what adopt removed, checkpoints it could not map, and
whatever else evotrain's variant validator would refuse (search evolve validates its baseline)."""
from __future__ import annotations

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

from mutations.adopt.notes import Notes, Refusal
from mutations.adopt.syntax import calls, code, dotted, unresolved
from mutations.validation import validate_source

_CHECKPOINTS = {"torch.save", "torch.load"}


def check_adopted(module: cst.Module, original: str, file: str, notes: Notes) -> list[Refusal]:
    wrapper = MetadataWrapper(module, unsafe_skip_copy=True)
    positions = wrapper.resolve(PositionProvider)
    lines = module.code.splitlines()
    refusals = []
    for name in unresolved(module):
        if name.value in notes.gone:
            refusals.append(Refusal(file, _original_line(original, lines[positions[name].start.line - 1], name.value),
                                    f"uses {name.value}: {notes.gone[name.value]}"))
    for call in calls(module):
        if dotted(call.func) in _CHECKPOINTS:
            refusals.append(Refusal(file, _original_line(original, lines[positions[call].start.line - 1], code(call.func)),
                                    f"{code(call.func)}: a checkpoint adopt cannot map (it removes the ones in "
                                    "evaluation blocks and resume branches); the runtime starts every run fresh"))
    for refused in validate_source(module.code).refusals:
        line = lines[refused.line - 1] if refused.line else ""
        refusals.append(Refusal(file, _original_line(original, line, line.strip()) if line else 1,
                                f"the adopted script would break a variant rule: {refused.message}"))
    return sorted(set(refusals), key=lambda r: r.line)


def _original_line(original: str, adopted_line: str, text: str) -> int:
    """The line of the original script an adopted line came from (the statements adopt keeps are unchanged),
    else the last line that holds text."""
    lines = original.splitlines()
    exact = [n for n, line in enumerate(lines, 1) if line.strip() == adopted_line.strip()]
    return exact[0] if exact else max((n for n, line in enumerate(lines, 1) if text in line), default=1)
