"""Static validation of a variant: the gate before any training budget is spent.

`validate_source` reads a train.py with the stdlib `ast` and refuses what must never run:
code that does not parse or compile, no-ops, scripts that leave the runtime contract
(trainer.runtime's budget, data and finish calls, its private state, the other trusted
modules), networking, process spawning, file-system and environment access, and
introspection that can reach the runtime's internals. `smoke_run` then trains it for one
step in the real sandbox. Every refusal carries a stable reason code and one line that
names the offending name and the fix: both are stored and fed back into LLM prompts.

These checks are not the security boundary: the operating system is (trainer/isolation.py:
each variant in its own namespaces, its data served and its score computed outside it). They
catch honest mistakes and obvious escapes early, with a message a mutator can act on. Names are
resolved through import aliases (`import os as o`, `from numpy import memmap`) and simple
assignments (`r = runtime`); dynamic tricks beyond that (exec'd strings, objects passed around)
are left to the sandbox. "Uses the runtime" has one definition, trainer.compat.uses_runtime,
shared with the runner.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass, replace
from enum import Enum
from fnmatch import fnmatchcase

from trainer.compat import uses_runtime
from trainer.parsing import parse_python
from trainer.program import Program
from mutations.edits import ApplyError, Mutation, apply_mutation


class Reason(str, Enum):
    SYNTAX = "syntax"                      # does not parse
    COMPILE = "compile"                    # parses but does not compile (`return` outside a function, ...)
    NOOP = "noop"                          # same program as the baseline
    NO_RUNTIME = "no_runtime"              # does not import trainer.runtime
    PROTECTED = "protected"                # touches the runtime contract or the other trusted modules
    FORBIDDEN_IMPORT = "forbidden_import"  # networking, processes, file system, introspection
    FORBIDDEN_CALL = "forbidden_call"      # shell, environment, code from strings, interpreter internals
    DATA_ACCESS = "data_access"            # opens files instead of taking runtime.next_batch
    SIZE = "size"                          # too many bytes or lines
    SMOKE = "smoke"                        # failed its one-step training run
    APPLY = "apply"                        # the mutation did not apply to its parent


@dataclass(frozen=True)
class Refusal:
    reason: Reason
    message: str  # one line naming the problem and what to do instead
    line: int | None = None

    def __str__(self) -> str:
        where = f" (line {self.line})" if self.line is not None else ""
        return f"{self.reason.value}{where}: {self.message}"


@dataclass(frozen=True)
class Verdict:
    refusals: tuple[Refusal, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.refusals

    def summary(self) -> str:
        """One line per refusal, for logs and prompts; "ok" when there is none."""
        return "\n".join(map(str, self.refusals)) if self.refusals else "ok"


# ---------------------------------------------------------------- the lists
RUNTIME = "trainer.runtime"
# The runtime's budget, data, step and finish calls: without them a run is not measured.
REQUIRED_RUNTIME_CALLS = ("keep_training", "next_batch", "step", "finish")
RUNTIME_API = "keep_training, next_batch, progress, step, finish, autocast, pick"

# Modules a variant may not import (a dotted name is refused when any prefix is listed).
NETWORK_MODULES = ("socket", "ssl", "http", "urllib", "urllib3", "requests", "httpx", "aiohttp", "ftplib",
                   "smtplib", "telnetlib", "xmlrpc", "websocket", "websockets", "asyncio", "paramiko",
                   "huggingface_hub", "torch.hub")
PROCESS_MODULES = ("subprocess", "multiprocessing", "pty", "pexpect", "sh", "torch.multiprocessing",
                   "concurrent.futures.process", "concurrent.futures.ProcessPoolExecutor",
                   "torch.utils.cpp_extension")  # cpp_extension runs the compiler
FILESYSTEM_MODULES = ("glob", "shutil", "pathlib", "tempfile")
INTROSPECTION_MODULES = ("gc", "inspect", "ctypes", "builtins")
# Loading code by name can reach trainer.session and the others: only `from trainer import runtime`.
DYNAMIC_IMPORT_MODULES = ("importlib", "pkgutil", "zipimport", "runpy")
DATA_MODULES = ("pickle", "joblib", "shelve", "dill", "cloudpickle", "mmap", "h5py", "datasets")

# Names a variant may not use, with why and the fix: qualified names (builtins as builtins.NAME),
# fnmatch patterns, matched on every prefix of a dotted reference (`os.environ.get` is os.environ).
_SHELL = "runs other programs; a variant only trains in its own process: remove it"
_FILES = "walks or changes the file system; a variant reads and writes no files: remove it"
_ENVIRONMENT = "reads the environment (API keys must not be probed); put settings in module constants instead"
_DESCRIPTORS = "uses raw file descriptors (the result channel is one); remove it"
_TRACING = "traces other frames, the runtime's among them; remove it"
FORBIDDEN_CALLS = {
    "os.system": _SHELL, "os.popen": _SHELL, "os.exec*": _SHELL, "os.spawn*": _SHELL, "os.posix_spawn*": _SHELL,
    "os.fork*": _SHELL, "os.kill": _SHELL, "os.killpg": _SHELL,
    "os.walk": _FILES, "os.fwalk": _FILES, "os.listdir": _FILES, "os.scandir": _FILES, "os.remove": _FILES,
    "os.unlink": _FILES, "os.rmdir": _FILES, "os.removedirs": _FILES, "os.rename": _FILES, "os.replace": _FILES,
    "os.environ": _ENVIRONMENT, "os.environb": _ENVIRONMENT, "os.getenv*": _ENVIRONMENT, "os.putenv": _ENVIRONMENT,
    "os.unsetenv": _ENVIRONMENT,
    "os.read": _DESCRIPTORS, "os.write": _DESCRIPTORS, "os.dup*": _DESCRIPTORS, "os.pipe": _DESCRIPTORS,
    "os._*": "reaches interpreter internals; remove it",
    "sys._*": "reaches interpreter internals (the runtime's frames among them); remove it",
    "sys.modules": "reaches every loaded module, the runtime's internals among them; import what you need instead",
    "sys.settrace": _TRACING, "sys.setprofile": _TRACING, "threading.settrace*": _TRACING,
    "threading.setprofile*": _TRACING,
    "builtins.eval": "runs code built from strings; write the code itself",
    "builtins.exec": "runs code built from strings; write the code itself",
    "builtins.compile": "(the builtin) compiles code from strings; use torch.compile for models, and rename a "
                        "variable of that name",
    "builtins.globals": "reaches the module namespace indirectly; use the names themselves",
    "builtins.__builtins__": "reaches the builtins indirectly; use the names themselves",
}
DATA_ACCESS_CALLS = ("builtins.open", "io.open", "io.open_code", "io.FileIO", "os.open", "os.fdopen", "codecs.open",
                     "numpy.memmap", "numpy.fromfile", "numpy.load", "numpy.loadtxt", "numpy.genfromtxt",
                     "numpy.save*", "torch.load", "torch.save", "torch.from_file", "torch.*.from_file",
                     "pandas.read_*")
# Attributes of frames, tracebacks, functions and classes that lead to other code's globals.
INTROSPECTION_ATTRIBUTES = frozenset({
    "f_back", "f_globals", "f_locals", "f_builtins", "tb_frame", "gi_frame", "cr_frame", "ag_frame",
    "__globals__", "__builtins__", "__code__", "__closure__", "__subclasses__", "__self__",
})
# Modules whose attributes may only be named in the source, never looked up dynamically.
GUARDED_MODULES = ("os", "sys", "io", "builtins", "trainer")

_ATTRIBUTE_FUNCTIONS = frozenset({"builtins.getattr", "builtins.setattr", "builtins.delattr", "builtins.vars"})


@dataclass(frozen=True)
class _Rule:
    pattern: str
    reason: Reason
    advice: str  # why it is refused and the fix, after the name


def _rules(names: tuple[str, ...], reason: Reason, advice: str) -> list[_Rule]:
    return [_Rule(name, reason, advice) for name in names]


_NO_FILES = "the runtime gives the data (runtime.next_batch); a variant does not open files"
_BY_NAME = "loads modules by name; use plain import statements (of the trainer package, only trainer.runtime)"
_RULES = (
    *_rules(NETWORK_MODULES, Reason.FORBIDDEN_IMPORT, "is networking; a variant only trains: remove it"),
    *_rules(PROCESS_MODULES, Reason.FORBIDDEN_IMPORT,
            "spawns processes; a variant runs in one process (threads are fine): remove it"),
    *_rules(FILESYSTEM_MODULES, Reason.FORBIDDEN_IMPORT,
            "reaches the file system; a variant reads and writes no files: remove it"),
    *_rules(INTROSPECTION_MODULES, Reason.FORBIDDEN_IMPORT,
            "is introspection that can reach the runtime's internals; remove it"),
    *_rules((*DYNAMIC_IMPORT_MODULES, "builtins.__import__"), Reason.PROTECTED, _BY_NAME),
    *_rules(DATA_MODULES, Reason.DATA_ACCESS, f"reads files; {_NO_FILES}"),
    *_rules(DATA_ACCESS_CALLS, Reason.DATA_ACCESS, f"opens files; {_NO_FILES}"),
    *(_Rule(name, Reason.FORBIDDEN_CALL, advice) for name, advice in FORBIDDEN_CALLS.items()),
)


# ---------------------------------------------------------------- validate_source
def validate_source(source: str, *, baseline: str | None = None, max_bytes: int = 200_000,
                    max_lines: int = 4000) -> Verdict:
    """Every reason to refuse `source` (a script, or a program's text: every file is checked, and a
    refusal in a module other than the script names it) before training it."""
    program = Program.parse(source)
    if baseline is not None and source == baseline:
        return Verdict((_refusal(Reason.NOOP, "the variant is identical to its baseline; change the code"),))
    before = Program.parse(baseline) if baseline is not None else None
    if before is not None and before.names != program.names:
        return Verdict((_refusal(Reason.APPLY, f"the variant's files ({', '.join(program.names)}) are not its "
                                               f"baseline's ({', '.join(before.names)}); change code inside them"),))
    refusals: list[Refusal] = []
    called: set[str] = set()
    for name, text in program.files:
        found, calls = _file_refusals(text, max_bytes, max_lines)
        where = "" if name == program.script_name else f"in {name}: "
        refusals += [replace(r, message=where + r.message) for r in found]
        called |= calls
    if any(r.reason is Reason.SYNTAX for r in refusals):
        return Verdict(tuple(refusals))
    if before is not None and _same_program(program, before):
        refusals.append(_refusal(Reason.NOOP, "the variant differs from its baseline only in whitespace or "
                                              "comments; change the code"))
    if not uses_runtime(source):
        refusals.append(_refusal(Reason.NO_RUNTIME, "the script does not import the runtime: add `from trainer import "
                                 "runtime` and train through runtime.keep_training, next_batch, step and finish"))
    else:
        refusals.extend(_missing_calls(called, _required_calls(before)))
    return Verdict(tuple(refusals))


def _file_refusals(source: str, max_bytes: int, max_lines: int) -> tuple[list[Refusal], set[str]]:
    """One file's refusals (a syntax error stops its checks there) and the runtime functions it calls."""
    refusals = _size_refusals(source, max_bytes, max_lines)
    try:
        tree = parse_python(source, "train.py")
    except (SyntaxError, ValueError, RecursionError) as error:
        return [*refusals, _syntax_refusal(error)], set()
    try:
        compile(source, "train.py", "exec")
    except (SyntaxError, ValueError, RecursionError) as error:
        refusals.append(_refusal(Reason.COMPILE, f"{_error_text(error)}; fix the code so Python compiles it",
                                 getattr(error, "lineno", None)))
    checker = _Checker(_Names.of(tree))
    checker.visit(tree)
    return refusals + sorted(checker.refusals, key=lambda r: r.line or 0), checker.runtime_calls


def validate_mutation(parent: str, mutation: Mutation) -> tuple[str | None, Verdict]:
    """Apply a mutation to its parent, then validate the child: (child source or None, verdict)."""
    try:
        child = apply_mutation(parent, mutation)
    except ApplyError as error:
        reason = Reason.NOOP if error.reason == "noop" else Reason.APPLY
        return None, Verdict((_refusal(reason, f"{error.reason}: {error}"),))
    return child, validate_source(child, baseline=parent)


def _refusal(reason: Reason, message: str, line: int | None = None) -> Refusal:
    return Refusal(reason, " ".join(message.split()), line)


def _error_text(error: BaseException) -> str:
    if isinstance(error, SyntaxError):
        return error.msg
    if isinstance(error, RecursionError):
        return "nested too deeply for the parser"
    return str(error)


def _syntax_refusal(error: BaseException) -> Refusal:
    text = (getattr(error, "text", None) or "").strip()
    near = f" at `{text[:80]}`" if text else ""
    return _refusal(Reason.SYNTAX, f"{_error_text(error)}{near}; fix the code so it parses",
                    getattr(error, "lineno", None))


def _size_refusals(source: str, max_bytes: int, max_lines: int) -> list[Refusal]:
    refusals = []
    size, lines = len(source.encode()), len(source.splitlines())
    if size > max_bytes:
        refusals.append(_refusal(Reason.SIZE, f"{size} bytes, over the {max_bytes} byte limit; make a smaller change"))
    if lines > max_lines:
        refusals.append(_refusal(Reason.SIZE, f"{lines} lines, over the {max_lines} line limit; make a smaller change"))
    return refusals


def _same_program(program: Program, baseline: Program) -> bool:
    """Equal up to whitespace and comments, file by file."""
    try:
        return all(ast.dump(parse_python(text)) == ast.dump(parse_python(baseline.source(name)))
                   for name, text in program.files)
    except (SyntaxError, ValueError, RecursionError):
        return False


def _required_calls(baseline: Program | None) -> tuple[str, ...]:
    """The core calls, plus every runtime function the baseline calls."""
    if baseline is None:
        return REQUIRED_RUNTIME_CALLS
    called: set[str] = set()
    for _, text in baseline.files:
        try:
            tree = parse_python(text)
        except (SyntaxError, ValueError, RecursionError):
            return REQUIRED_RUNTIME_CALLS
        checker = _Checker(_Names.of(tree))
        checker.visit(tree)
        called |= checker.runtime_calls
    return (*REQUIRED_RUNTIME_CALLS, *sorted(called - set(REQUIRED_RUNTIME_CALLS)))


def _missing_calls(called: set[str], required: tuple[str, ...]) -> list[Refusal]:
    return [_refusal(Reason.PROTECTED, f"runtime.{name}(...) is no longer called; the runtime's budget, data and "
                     f"finish calls must stay, so put runtime.{name}(...) back")
            for name in required if name not in called]


# ---------------------------------------------------------------- names
def _under(name: str, module: str) -> bool:
    return name == module or name.startswith(module + ".")


def _prefixes(name: str) -> list[str]:
    """`os.environ.get` -> os, os.environ, os.environ.get; a builtin's own prefix `builtins` is left out,
    since every unimported name resolves under it (the `builtins` import itself is checked by its name)."""
    parts = name.split(".")
    first = 2 if parts[0] == "builtins" and len(parts) > 1 else 1
    return [".".join(parts[:i]) for i in range(first, len(parts) + 1)]


def _shown(name: str) -> str:
    return name.removeprefix("builtins.")


@dataclass
class _Names:
    """What each name of the module stands for: import aliases and simple assignments of them."""

    aliases: dict[str, str]
    runtime_names: frozenset[str]  # local names the imports bind to the runtime or its members

    @classmethod
    def of(cls, tree: ast.Module) -> _Names:
        bindings = [b for node in ast.walk(tree) for b in _import_bindings(node)]
        aliases: dict[str, str] = {}
        for local, bound, _ in bindings:
            aliases.setdefault(local, bound)
        runtime_names = frozenset(local for local, bound, _ in bindings if _under(bound, RUNTIME))
        names = cls(aliases, runtime_names)
        names._follow_assignments(tree)
        return names

    def _follow_assignments(self, tree: ast.Module) -> None:
        """`r = runtime`, `s = os.system`: the new name stands for the same thing (chains followed)."""
        pairs = [(node.targets[0].id, node.value) for node in ast.walk(tree)
                 if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)]
        changed = True
        while changed:
            changed = False
            for local, value in pairs:
                full = self.imported(value)
                if full is not None and local not in self.aliases:
                    self.aliases[local] = full
                    changed = True

    def qualified(self, node: ast.expr) -> str | None:
        """`o.system` -> os.system, `open` -> builtins.open; None when the chain starts at no name."""
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            return None
        return ".".join([self.aliases.get(node.id, f"builtins.{node.id}"), *reversed(parts)])

    def imported(self, node: ast.expr) -> str | None:
        """The qualified name when the chain starts at an imported name, else None."""
        base = node
        while isinstance(base, ast.Attribute):
            base = base.value
        return self.qualified(node) if isinstance(base, ast.Name) and base.id in self.aliases else None


def _import_bindings(node: ast.AST) -> list[tuple[str, str, str]]:
    """(local name, what it is bound to, the module or member imported) for each name an import binds."""
    if isinstance(node, ast.Import):
        return [(a.asname, a.name, a.name) if a.asname else (a.name.split(".")[0], a.name.split(".")[0], a.name)
                for a in node.names]
    if isinstance(node, ast.ImportFrom) and node.module and not node.level:
        return [(a.asname or a.name, f"{node.module}.{a.name}", f"{node.module}.{a.name}")
                for a in node.names if a.name != "*"]
    return []


# ---------------------------------------------------------------- the checks
class _Checker(ast.NodeVisitor):
    """Walks the tree once; collects refusals (one per reason and message) and the runtime calls made."""

    def __init__(self, names: _Names) -> None:
        self.names = names
        self.refusals: list[Refusal] = []
        self.runtime_calls: set[str] = set()
        self._seen: set[tuple[Reason, str]] = set()

    def refuse(self, reason: Reason, message: str, node: ast.AST) -> None:
        if (reason, message) not in self._seen:
            self._seen.add((reason, message))
            self.refusals.append(_refusal(reason, message, getattr(node, "lineno", None)))

    # -- imports
    def visit_Import(self, node: ast.Import) -> None:
        for local, bound, full in _import_bindings(node):
            self.check_name(full, node)
            self.check_rebinding(local, node, bound)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        for local, bound, full in _import_bindings(node):
            self.check_name(full, node)
            self.check_rebinding(local, node, bound)
        if any(alias.name == "*" for alias in node.names):
            module = "." * node.level + (node.module or "")
            self.check_name(node.module, node)
            self.refuse(Reason.FORBIDDEN_IMPORT, f"`from {module} import *` hides which names are used; "
                        f"import the names you need", node)

    # -- references
    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            self.check_name(self.names.qualified(node), node)
        else:
            self.check_rebinding(node.id, node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        name = self.names.qualified(node)
        chain = node
        while isinstance(chain, ast.Attribute):
            if chain.attr in INTROSPECTION_ATTRIBUTES:
                self.refuse(Reason.FORBIDDEN_CALL, f"`.{chain.attr}` is introspection that can reach the runtime's "
                            f"internals; remove it", node)
            chain = chain.value
        if name is None:  # the chain starts at a call or a subscript: check what is inside
            self.generic_visit(node)
            return
        if not isinstance(node.ctx, ast.Load) and _under(name, RUNTIME):
            self.refuse(Reason.PROTECTED, f"`{ast.unparse(node)}` changes the runtime; the runtime must stay as it "
                        f"is: use its functions ({RUNTIME_API}) without replacing them", node)
        self.check_name(name, node)

    def visit_Call(self, node: ast.Call) -> None:
        function = self.names.qualified(node.func)
        if function is not None and function.startswith(RUNTIME + "."):
            self.runtime_calls.add(function.split(".")[2])
        if function in _ATTRIBUTE_FUNCTIONS and node.args:
            self.check_attribute_function(function, node)
        self.generic_visit(node)

    def check_attribute_function(self, function: str, node: ast.Call) -> None:
        """getattr/setattr/delattr/vars on the runtime or a guarded module."""
        target = self.names.imported(node.args[0])
        if target is None or not any(_under(target, module) for module in GUARDED_MODULES):
            return
        attribute = node.args[1] if len(node.args) > 1 else None
        if function == "builtins.getattr" and isinstance(attribute, ast.Constant) and isinstance(attribute.value, str):
            self.check_name(f"{target}.{attribute.value}", node)
        elif _under(target, RUNTIME):
            self.refuse(Reason.PROTECTED, f"`{_shown(function)}` on the runtime reaches into it; call its "
                        f"functions ({RUNTIME_API}) by name", node)
        else:
            self.refuse(Reason.FORBIDDEN_CALL, f"`{_shown(function)}` on {target} hides which names are used; "
                        f"write {target}.NAME directly", node)

    # -- the rules
    def check_name(self, name: str | None, node: ast.AST) -> None:
        if name is None:
            return
        if _under(name, "trainer") and not _under(name, RUNTIME):
            module = ".".join(name.split(".")[:2])
            self.refuse(Reason.PROTECTED, f"`{module}` is trusted code: only trainer.runtime is for variants "
                        f"(from trainer import runtime); remove it", node)
        elif name.startswith(RUNTIME + "._"):
            private = name.split(".")[2]
            self.refuse(Reason.PROTECTED, f"`runtime.{private}` is private to the runtime; use its public functions "
                        f"({RUNTIME_API})", node)
        for prefix in _prefixes(name):
            rule = next((r for r in _RULES if fnmatchcase(prefix, r.pattern)), None)
            if rule is not None:
                self.refuse(rule.reason, f"`{_shown(prefix)}` {rule.advice}", node)
                return

    def check_rebinding(self, local: str, node: ast.AST, bound: str | None = None) -> None:
        """The names an import binds to the runtime (or its functions) keep meaning the runtime."""
        if local in self.names.runtime_names and (bound is None or not _under(bound, RUNTIME)):
            self.refuse(Reason.PROTECTED, f"the name `{local}` is rebound, but it stands for the runtime; "
                        f"use another name", node)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.check_rebinding(node.name, node)
        self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.check_rebinding(node.name, node)
        self.generic_visit(node)

    def visit_arg(self, node: ast.arg) -> None:
        self.check_rebinding(node.arg, node)
        self.generic_visit(node)

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.name:
            self.check_rebinding(node.name, node)
        self.generic_visit(node)


# ---------------------------------------------------------------- smoke_run
_TRACEBACK_LINE = re.compile(r'File "(?:[^"]*/)?train\.py", line (\d+)')


def smoke_run(source: str, *, device: str = "cpu", timeout_s: float = 120) -> Verdict:
    """Train `source` for one optimizer step in the real sandbox; a failure becomes one SMOKE refusal.

    A script without the runtime is refused without running it: in compatibility mode it
    would train for as long as it sets itself.
    """
    from trainer.runner import run_variant, smoke_spec  # lazy: the runner pulls in psutil and the datasets

    if not uses_runtime(source):
        return Verdict((_refusal(Reason.NO_RUNTIME, "the script does not import the runtime: add `from trainer "
                                 "import runtime` so a smoke run can stop it after one step"),))
    result = run_variant(source, smoke_spec(device=device), timeout_s=timeout_s)
    if result.status.is_ok():
        return Verdict()
    lines = [line.strip() for line in result.log_tail.splitlines() if line.strip()]
    last = lines[-1][:300] if lines else "(empty log)"
    frames = _TRACEBACK_LINE.findall(result.log_tail)
    return Verdict((_refusal(Reason.SMOKE, f"{result.status.value}: {result.message}; last log line: {last}",
                             int(frames[-1]) if frames else None),))
