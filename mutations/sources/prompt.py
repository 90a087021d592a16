"""The conversation with the model: the prompt, the propose_mutation tool, and reading answers back.

A request becomes a system prompt (the contract and the addressing rules) and one user turn:
the research direction and the parent's source first, marked for prompt caching since they
repeat across calls, then the volatile parts (lineage, siblings, knob and ablation tables, the
task). An answer is read back into a Mutation of the parent: node edits from the tool call,
or, from a free-form answer, SEARCH/REPLACE blocks or a whole file; all go through the
structural diff (mutations.patch), so every answer has the canonical form.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from mutations.edits import Action, ApplyError, Mutation
from mutations.patch import from_node_edits, from_search_replace, from_source, unified_diff
from mutations.sources._base import Outcome, ProposalRequest
from mutations.units import FOOTER, addressable_units
from mutations.validation import RUNTIME_API
from trainer.program import Program

CACHED = {"type": "ephemeral"}
TOOL_NAME = "propose_mutation"

SYSTEM = f"""\
You improve a GPT training script, train.py, one measured change at a time. Each change you \
propose is applied to a parent script, checked statically, trained under a fixed budget and scored \
by validation bits per byte (val_bpb, lower is better), paired against the parent on the same seeds. \
What helps is kept; every result, good or bad, is shown to you in later requests.

Answer by calling {TOOL_NAME} once:
- edits: node edits of the parent. An edit names one unit of the file by its address:
  - a top-level function, class or single-name assignment by its name: `make_optimizer`, `GPT`, `LEARNING_RATE`;
  - a class member as `Class.member`: `GPT.forward`, `Block.__init__`;
  - `<module>`: the docstring and the leading imports (replace it to add an import);
  - `<stmt@k>`: the k-th unnamed top-level statement (the training loop, a bare call), as listed under the parent;
  - when the parent has several files (train.py and the local modules it imports), a unit of a file other \
than train.py is prefixed with its file name: `model.py::GPT.forward`, `model.py::<module>`. One change may \
edit several files (the optimizer built in model.py and its learning rate set in train.py).
  replace: `code` is the complete new code of the unit (a whole function, class, class member or \
assignment; class members dedented, as if at top level). delete: no code. insert: `target` is the new \
unit's name, `code` its code, `after` the existing unit it follows (`Class.<start>` for the top of a class body).
  Edit only the units you change; everything else stays byte for byte.
- rationale: why this should lower val_bpb under this budget; cite the paper or project behind it.
- expected_effect: what you expect to measure, e.g. "-0.01 val_bpb, steps 5% slower".
- new_knobs: module-level UPPER_CASE constants you add that are worth tuning, with a range: log[1e-4, 1e-1], \
float[0, 0.5], int[2, 12], int[64, 1024, step=64] or choice[a, b]. Define them next to the other \
hyperparameters as `NAME = literal  # what it is` (a constant of model.py is named `model.py::NAME` here).

Rules (an answer that breaks one is sent back with the reason):
- Keep the runtime contract: `from trainer import runtime` and every runtime call the parent makes \
({RUNTIME_API}); never wrap, replace or reassign them, and import nothing else from trainer.
- No files, network, processes, environment variables, eval/exec or introspection: the data comes only \
from runtime.next_batch.
- The change must apply, parse, change the program, and not repeat a change already tried on this parent.
- One idea per change, small enough that its measured effect says whether the idea works.
"""

_ACTIONS = tuple(a.value for a in Action)
TOOL = {
    "name": TOOL_NAME,
    "description": "Propose one change to the parent train.py as node edits of its units.",
    "input_schema": {
        "type": "object",
        "properties": {
            "edits": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "properties": {
                        "target": {"type": "string", "description": "unit address (GPT.forward, LEARNING_RATE, "
                                                                    "<module>, <stmt@k>); for insert the new name"},
                        "action": {"type": "string", "enum": list(_ACTIONS)},
                        "code": {"type": "string", "description": "complete new code of the unit; empty for delete"},
                        "after": {"type": "string", "description": "insert only: the existing unit it follows"},
                    },
                    "required": ["target", "action"],
                },
            },
            "rationale": {"type": "string"},
            "expected_effect": {"type": "string"},
            "new_knobs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "range": {"type": "string"}},
                    "required": ["name", "range"],
                },
            },
        },
        "required": ["edits", "rationale", "expected_effect"],
    },
}
TOOL_CHOICE = {"type": "tool", "name": TOOL_NAME}


# ---------------------------------------------------------------- the prompt
def system_blocks() -> list[dict]:
    return [{"type": "text", "text": SYSTEM, "cache_control": CACHED}]


def first_turn(request: ProposalRequest, direction: str) -> dict:
    """The user turn: cached stable blocks (direction, parent), then one volatile block."""
    stable = [f"# Research direction\n\n{direction.strip()}"] if direction.strip() else []
    stable.append(_parent_text(request))
    volatile = [_lineage_text(request.lineage), _siblings_text(request.siblings),
                _table_text("Knobs of the parent", request.knob_table),
                _table_text("Ablation so far", request.ablation_table)]
    volatile += _crossover_task(request) if request.other_parent_source is not None else [_task(request)]
    blocks = [{"type": "text", "text": text, "cache_control": CACHED} for text in stable]
    blocks.append({"type": "text", "text": "\n\n".join(t for t in volatile if t)})
    return {"role": "user", "content": blocks}


def _parent_text(request: ProposalRequest) -> str:
    files = Program.parse(request.parent_source).runnable()
    title = f"# The parent{f' ({request.parent_id})' if request.parent_id else ''}: {', '.join(files)}"
    shown = [_fenced(source) for source in files.values()] if len(files) == 1 else \
        [f"## {name}\n\n{_fenced(source)}" for name, source in files.items()]
    return "\n\n".join([title, *shown, _unit_index(request.parent_source)])


def _fenced(source: str) -> str:
    return "```python\n" + source.rstrip("\n") + "\n```"


def _unit_index(source: str) -> str:
    """Every address, and the first line of each unnamed statement so `<stmt@k>` can be told apart."""
    units = addressable_units(source)
    unnamed = [f"- {u.address}: `{_first_code_line(u.code)}`" for u in units.values() if not u.named]
    named = ", ".join(a for a in units if a != FOOTER and units[a].named)
    return "\n".join([f"Units: {named}", *(["Unnamed statements:", *unnamed] if unnamed else [])])


def _first_code_line(code: str) -> str:
    return next(line.strip() for line in code.splitlines() if line.strip() and not line.strip().startswith("#"))


def _outcome_text(outcome: Outcome) -> str:
    measured = ""
    if outcome.delta is not None:
        measured = f", delta val_bpb {outcome.delta:+.4f}"
        if outcome.ci is not None:
            measured += f" (CI {outcome.ci[0]:+.4f} to {outcome.ci[1]:+.4f})"
    line = f"- {outcome.mutation}: {outcome.status}{measured}: {outcome.description}"
    tail = [t.strip()[:200] for t in outcome.detail.splitlines() if t.strip()][-6:]
    return "\n".join([line, *(f"    {t}" for t in tail)])


def _lineage_text(lineage: tuple[Outcome, ...]) -> str:
    if not lineage:
        return "# Lineage\n\nThe parent is the baseline."
    return "# Lineage: the changes that made the parent, oldest first\n\n" + "\n".join(map(_outcome_text, lineage))


def _siblings_text(siblings: tuple[Outcome, ...]) -> str:
    if not siblings:
        return ""
    return ("# Recent results of siblings (changes of this parent and its relatives; negative delta = better)\n\n"
            + "\n".join(map(_outcome_text, siblings)))


def _table_text(title: str, table: str) -> str:
    return f"# {title}\n\n{table.strip()}" if table.strip() else ""


def _task(request: ProposalRequest) -> str:
    tried = f" {len(request.tried)} changes were already tried on this parent; propose a different one." \
        if request.tried else ""
    return f"# Task\n\nPropose one change of the parent that should lower val_bpb.{tried} Call {TOOL_NAME}."


def _crossover_task(request: ProposalRequest) -> list[str]:
    diff = unified_diff(request.parent_source, request.other_parent_source or "", path="train.py")
    return [f"# The other parent\n\nIts differences from the parent above:\n\n```diff\n{diff}```",
            f"# Conflict\n\n{request.conflict.strip()}",
            "# Task\n\nBoth parents improved on a common ancestor, and their changes conflict. Write one change of "
            "the parent above that merges in the other parent's changes while keeping the parent's own, resolving "
            f"the conflict so that both ideas survive. Call {TOOL_NAME} with edits of the parent above."]


# ---------------------------------------------------------------- follow-up turns
def assistant_turn(content: list) -> dict:
    """The model's answer as a message to send back (text and tool calls; nothing else is sent)."""
    blocks = []
    for block in content:
        if block.type == "text":
            blocks.append({"type": "text", "text": block.text})
        elif block.type == "tool_use":
            blocks.append({"type": "tool_use", "id": block.id, "name": block.name, "input": block.input})
    return {"role": "assistant", "content": blocks}


def feedback_turn(content: list, reason: str) -> dict:
    """Why the answer was refused: a tool_result error for each tool call, or plain text."""
    text = f"This change was refused:\n{reason}\nPropose a corrected or different change with {TOOL_NAME}."
    calls = [block.id for block in content if block.type == "tool_use"]
    if not calls:
        return {"role": "user", "content": [{"type": "text", "text": text}]}
    return {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call, "is_error": True, "content": text}
                                        for call in calls]}


# ---------------------------------------------------------------- reading answers
@dataclass(frozen=True)
class Answer:
    mutation: Mutation
    rationale: str = ""
    expected_effect: str = ""
    new_knobs: dict = field(default_factory=dict)


_FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.DOTALL)


def parse_answer(base: str, content: list, stop_reason: str | None, name: str = "") -> Answer:
    """The answer as a mutation of `base`; ApplyError with the reason when it is not one."""
    if stop_reason == "max_tokens":
        raise ApplyError("truncated", "the answer was cut off at the token limit; propose a smaller change")
    call = next((block for block in content if block.type == "tool_use" and block.name == TOOL_NAME), None)
    if call is not None:
        return _from_tool(base, call.input, name)
    return _from_text(base, "".join(block.text for block in content if block.type == "text"), name)


def _from_tool(base: str, data: dict, name: str) -> Answer:
    edits = data.get("edits")
    if isinstance(edits, str):  # some answers encode the list as a JSON string
        try:
            edits = json.loads(edits)
        except json.JSONDecodeError:
            pass
    if not isinstance(edits, list) or not edits:
        raise ApplyError("unparsable", f"{TOOL_NAME} needs `edits`: a non-empty list of {{target, action, code}}")
    for number, edit in enumerate(edits, 1):
        _check_edit(number, edit)
    return Answer(from_node_edits(base, edits, name), str(data.get("rationale", "")),
                  str(data.get("expected_effect", "")), _new_knobs(data.get("new_knobs") or []))


def _check_edit(number: int, edit: object) -> None:
    if not isinstance(edit, dict) or not edit.get("target"):
        raise ApplyError("unparsable", f"edit {number} has no target; name the unit it changes, e.g. GPT.forward")
    action = edit.get("action", "replace")
    if action not in _ACTIONS:
        raise ApplyError("unparsable", f"edit {number} has action {action!r}; use one of {', '.join(_ACTIONS)}")
    if action != "delete" and not str(edit.get("code", "")).strip():
        raise ApplyError("unparsable", f"edit {number} ({edit['target']}) has no code; give the unit's complete new "
                                       f"code, or use action delete")


def _new_knobs(entries: list) -> dict:
    if not all(isinstance(e, dict) and e.get("name") and e.get("range") for e in entries):
        raise ApplyError("unparsable", "each new_knobs entry needs a name and a range, e.g. "
                                       "{\"name\": \"QK_SCALE\", \"range\": \"log[0.1, 10]\"}")
    return {e["name"]: str(e["range"]) for e in entries}


def _from_text(base: str, text: str, name: str) -> Answer:
    """A free-form answer: SEARCH/REPLACE blocks, else the longest ```python block as the whole file."""
    if "<<<<<<< SEARCH" in text:
        return Answer(from_search_replace(base, text, name), _prose(text))
    files = _FENCE.findall(text)
    if files and len(Program.parse(base).files) == 1:
        return Answer(from_source(base, max(files, key=len), name), _prose(text))
    raise ApplyError("unparsable", f"the answer holds no {TOOL_NAME} call, no SEARCH/REPLACE blocks and no "
                                   f"```python file; call {TOOL_NAME}")


def _prose(text: str) -> str:
    """The explanation before the first block, as the rationale."""
    return re.split(r"```|<<<<<<< SEARCH", text, maxsplit=1)[0].strip()
