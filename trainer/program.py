"""A variant's files: the training script plus the local modules it imports.

nanoGPT keeps its model in model.py and its loop in train.py; a change to the optimizer may
touch both. A Program is that set, the script first. Everything that stores, hashes or passes
a variant around keeps using one string, `Program.text`:

- a single-file program's text is the script itself, byte for byte (so every single-file
  variant, stored or new, is unchanged);
- a multi-file program's text is a JSON document `{"evotrain_program": 1, "files": [[path,
  source], ...]}`, unambiguous whatever the files contain.

Code that reads the code (mutations, knobs, validation) addresses a unit of a module other
than the script as `model.py::GPT.forward` (see `qualify`); the script's units keep their
plain addresses, so single-file edits, knobs and stored mutations read as before.
"""
from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from trainer.errors import UserError
from trainer.parsing import parse_python

SEPARATOR = "::"        # `model.py::GPT.forward`: a unit of model.py
SCRIPT_NAME = "train.py"  # the name the script runs under in the sandbox
MAX_FILES = 16
_MAGIC = '{"evotrain_program": 1'
_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\.py")
_FILE_NAME = re.compile(r"[^./\\\x00][^/\\\x00]*")
T = TypeVar("T")


@dataclass(frozen=True)
class Program:
    files: tuple[tuple[str, str], ...]  # (file name, source), the script first

    def __post_init__(self) -> None:
        names = [name for name, _ in self.files]
        if not names:
            raise ValueError("a program has at least its script")
        if len(set(names)) != len(names):
            raise ValueError(f"a program names a file twice: {names}")
        # Files are written by these names (the sandbox, best/, export --git): no paths, no dot files. A module
        # is imported by its name; the script may be called anything (it runs as train.py).
        bad = [name for name in names[1:] if not _MODULE_NAME.fullmatch(name)]
        if bad or not _FILE_NAME.fullmatch(names[0]):
            raise ValueError(f"not a file name a program may hold: {(bad or names)[0]!r} (a module is NAME.py; "
                             "no paths, no dot files)")

    # ------------------------------------------------------------ text form
    @classmethod
    def parse(cls, text: str) -> Program:
        """The program a variant's text stands for (a plain script is a one-file program)."""
        if not is_multi_file(text):
            return cls(((SCRIPT_NAME, text),))
        data = json.loads(text)
        return cls(tuple((name, source) for name, source in data["files"]))

    @property
    def text(self) -> str:
        if len(self.files) == 1:
            return self.files[0][1]
        return json.dumps({"evotrain_program": 1, "files": [list(pair) for pair in self.files]})

    # ------------------------------------------------------------ reading
    @property
    def script(self) -> str:
        return self.files[0][1]

    @property
    def script_name(self) -> str:
        return self.files[0][0]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.files)

    def source(self, name: str) -> str:
        for file, source in self.files:
            if file == name:
                return source
        raise KeyError(name)

    def prefix(self, name: str) -> str:
        """What a unit address of this file starts with: nothing for the script."""
        return "" if name == self.script_name else name + SEPARATOR

    def qualify(self, name: str, address: str) -> str:
        return self.prefix(name) + address

    def locate(self, address: str) -> tuple[str, str]:
        """(file name, address inside it) of a qualified address; unknown files are an error."""
        if SEPARATOR not in address:
            return self.script_name, address
        name, local = address.split(SEPARATOR, 1)
        if name not in self.names or name == self.script_name:
            raise KeyError(f"no file {name} in this program (files: {', '.join(self.names)})")
        return name, local

    def group(self, items: Iterable[T], address: Callable[[T], str]) -> dict[str, list[T]]:
        """Items by the file their address names, in program order."""
        grouped: dict[str, list[T]] = {}
        for item in items:
            grouped.setdefault(self.locate(address(item))[0], []).append(item)
        return {name: grouped[name] for name in self.names if name in grouped}

    def with_sources(self, changed: dict[str, str]) -> Program:
        return Program(tuple((name, changed.get(name, source)) for name, source in self.files))

    def runnable(self) -> dict[str, str]:
        """The files as the sandbox gets them: the script as train.py, its modules by name."""
        return {SCRIPT_NAME if name == self.script_name else name: source for name, source in self.files}

    # ------------------------------------------------------------ from disk
    @classmethod
    def load(cls, script: Path) -> Program:
        """The script and every module beside it that it imports, directly or through another."""
        script = Path(script)
        files = {script.name: _read(script)}
        pending = [script.name]
        while pending:
            for module in _local_imports(files[pending.pop()], script.parent):
                if module not in files:
                    files[module] = _read(script.parent / module)
                    pending.append(module)
        if len(files) > MAX_FILES:
            raise UserError(f"{script} imports {len(files) - 1} local modules, more than {MAX_FILES - 1}; "
                            "evolve a smaller project")
        return cls(tuple(files.items()))

    def save(self, path: Path) -> list[Path]:
        """Write it out: a one-file program to `path` itself, any other into the folder `path`."""
        path = Path(path)
        if len(self.files) == 1:
            path.write_text(self.script)
            return [path]
        path.mkdir(parents=True, exist_ok=True)
        for name, source in self.files:
            (path / name).write_text(source)
        return [path / name for name in self.names]


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read {path}: {error}; pass a readable UTF-8 Python file") from None


def is_multi_file(text: str) -> bool:
    return text.startswith(_MAGIC)


def _local_imports(source: str, folder: Path) -> list[str]:
    """`import model`, `from model import GPT`: the file names of modules that live in folder."""
    try:
        tree = parse_python(source)
    except (SyntaxError, ValueError):
        return []  # the script's own syntax error is reported where it is validated
    modules = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.append(node.module)
    found = []
    for module in modules:
        name = module.split(".")[0] + ".py"
        if _MODULE_NAME.fullmatch(name) and (folder / name).is_file() and name not in found:
            found.append(name)
    return found
