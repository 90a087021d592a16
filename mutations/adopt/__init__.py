"""`search adopt`: a nanoGPT- or autoresearch-style training script rewritten to the runtime contract.

One pass per concern, in order: flags (DDP, wandb, resume), imports, data, device, the loop, the finish,
what the variant validator forbids, then the clean-up of what those made dead. Detection runs first and refuses what no pass can convert;
the adopted script is checked for uses of what was removed. Either every file converts or nothing does.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import libcst as cst
from libcst.metadata import MetadataWrapper

from mutations.adopt.checks import check_adopted
from mutations.adopt.cleanup import clean
from mutations.adopt.data import rewrite_data
from mutations.adopt.device import rewrite_device
from mutations.adopt.finish import rewrite_finish
from mutations.adopt.flags import fold_flags
from mutations.adopt.imports import REPLACED_MODULES, rewrite_imports
from mutations.adopt.loop import rewrite_loop
from mutations.adopt.notes import AdoptError, Notes
from mutations.adopt.shape import Detector
from mutations.adopt.targets import rewrite_targets
from mutations.adopt.validator import rewrite_forbidden
from trainer.errors import UserError
from trainer.program import Program

__all__ = ["AdoptError", "Adoption", "adopt"]


@dataclass(frozen=True)
class Adoption:
    files: dict[str, tuple[str, str]]   # file name -> (original, adopted), the script first
    left_out: list[str]                 # local files the runtime replaces (configurator.py, prepare.py)
    summary: list[str]


def adopt(script: Path) -> Adoption:
    """The script and its local modules, converted; AdoptError with every reason when something cannot be."""
    source = _read(script)
    wrapper = MetadataWrapper(_parse(script, source))
    imported = _local_imports(script, source)
    local = {name: MetadataWrapper(_parse(script.parent / name, _read(script.parent / name)))
             for name in imported if name.removesuffix(".py") not in REPLACED_MODULES}
    detector = Detector(script.name, wrapper, local)
    shape = detector.detect()
    if shape is None:
        raise AdoptError(detector.refusals)
    notes = Notes()
    module = fold_flags(wrapper.module, notes)
    module = rewrite_imports(module, notes)
    module = rewrite_data(module, shape.loader, notes)
    module = rewrite_device(module, notes)
    module = rewrite_loop(module, shape, notes)
    module = rewrite_finish(module, shape, notes)
    module = rewrite_forbidden(module, notes)
    module = clean(module, wrapper.module, notes)
    refusals = check_adopted(module, source, script.name, notes)
    if refusals:
        raise AdoptError(refusals)
    modules = {script.name: module, **{name: w.module for name, w in local.items()}}
    modules[shape.model_file] = rewrite_targets(modules[shape.model_file], shape.model_class, shape.model_file, notes)
    originals = {script.name: source, **{name: w.module.code for name, w in local.items()}}
    files = {name: (originals[name], adopted.code) for name, adopted in modules.items()}
    left_out = sorted(name for name in imported if name not in local)
    return Adoption(files, left_out, notes.summary)


def _local_imports(script: Path, source: str) -> list[str]:
    """The files beside the script that it imports (model.py, prepare.py: those a variant carries, see
    trainer.program), and configurator.py when it execs it."""
    found = list(Program.load(script).names[1:])
    if "exec(open('configurator.py')" in source.replace('"', "'") and (script.parent / "configurator.py").is_file():
        found.append("configurator.py")
    return found


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as error:
        raise UserError(f"cannot read {path}: {error.strerror}; pass the path of a training script") from None


def _parse(path: Path, source: str) -> cst.Module:
    try:
        return cst.parse_module(source)
    except cst.ParserSyntaxError as error:
        raise UserError(f"{path.name}:{error.raw_line}: does not parse ({error.message}); fix the syntax, "
                        "then adopt again") from None
