"""Imports: what the runtime replaces goes (torch.distributed, DDP, wandb, prepare.py), the runtime comes in."""
from __future__ import annotations

import libcst as cst

from mutations.adopt.notes import Notes
from mutations.adopt.syntax import bound_name, dotted, only_small, rebuild, statement

REPLACED_MODULES = {"prepare", "configurator"}   # local files whose role the runtime takes: never carried
_DROPPED = ("torch.distributed", "torch.nn.parallel", "wandb")
# what prepare.py provides that the runtime has as a value
_PREPARE_VALUES = {"MAX_SEQ_LEN": "runtime.seq_len"}
_GONE = {
    "TIME_BUDGET": "the runtime owns the budget: read runtime.progress() (0..1) instead",
    "evaluate_bpb": "the trusted scorer evaluates the model runtime.finish() hands over",
    "make_dataloader": "the runtime serves the training batches (runtime.next_batch) and no others",
}


def rewrite_imports(module: cst.Module, notes: Notes) -> cst.Module:
    """Drops the replaced imports; `from trainer import runtime` (and prepare.py's values) after the last import."""
    values: list[cst.BaseStatement] = []
    last = max(i for i, line in enumerate(module.body) if isinstance(only_small(line), (cst.Import, cst.ImportFrom)))

    def change(line: cst.BaseStatement) -> list[cst.BaseStatement] | None:
        small = only_small(line)
        dropped = isinstance(small, (cst.Import, cst.ImportFrom)) and _dropped(small, notes, values)
        if line is not module.body[last]:
            return [] if dropped else None
        return [*([] if dropped else [line]), statement("from trainer import runtime"), *values]

    return module.with_changes(body=rebuild(module.body, change))


def _dropped(node: cst.Import | cst.ImportFrom, notes: Notes, values: list[cst.BaseStatement]) -> bool:
    """True when the import goes; its names are recorded as gone, prepare.py's values appended to values."""
    modules = [dotted(a.name) for a in node.names] if isinstance(node, cst.Import) else [dotted(node.module)]
    if not any(name and (name.startswith(_DROPPED) or name in REPLACED_MODULES) for name in modules):
        return False
    names = [] if isinstance(node.names, cst.ImportStar) else node.names
    source = modules[0] if isinstance(node, cst.ImportFrom) else "this import"
    for alias in names:
        name = bound_name(alias)
        if name in _PREPARE_VALUES and source == "prepare":
            values.append(statement(f"{name} = {_PREPARE_VALUES[name]}"))
            notes.did(f"{name} from prepare.py is now {_PREPARE_VALUES[name]}")
        else:
            notes.remove(name, _GONE.get(name, f"{name} came from {source}, which the runtime replaces"))
    if "prepare" in modules:
        notes.did("prepare.py is not carried: the runtime owns the data, the tokenizer, the budget and the metric")
    return True
