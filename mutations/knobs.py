"""Knobs: the literals of a train.py that Optuna may tune, their distributions, and rewriting them.

What is a knob. A module-level statement `NAME = value` (or `NAME: type = value`), alone on its
line, where NAME is
- UPPER_CASE: always a candidate (the baseline's hyperparameter block), or
- lowercase, nanoGPT-style (`learning_rate = 6e-4`, `n_layer = 12`): a candidate unless the name
  matches NOT_KNOBS (paths, logging, evaluation cadence, checkpointing, device/dtype/backend,
  seeds, distributed settings, loop state); a `# knob: ...` comment opts such a name back in,
and the value is a number, a bool, a string of at most 20 characters, or a tuple of numbers (one
knob per element, named `NAME[i]`). A number is a literal or arithmetic on literals only: + - *
/ // ** and unary minus (`2**19`, `256 * 1024`, `3e-4 / 2`); its default is the evaluated value,
so `TOTAL_BATCH_SIZE = 2**19` is an int knob of 524288 ruled like any batch size. Inside
`runtime.pick(cpu=..., cuda=...)` the knob is the argument of the active device kind.

Not knobs:
- expressions that read a name (`lr_decay_iters = max_iters`, `warmup = max_iters // 10`,
  `HIDDEN = 2 * WIDTH`): they are derived, and they stay derived because set_knobs rewrites only
  literals, so setting max_iters moves lr_decay_iters with it. knob_table lists them per knob
  (column `derived`);
- anything inside a function, class, `if`, `with` or loop, and statements sharing a line
  (`A = 1; B = 2`);
- state, not configuration: a name bound again after its definition, anywhere in module-level
  code: inside a module-level loop (`step += 1`, `total_time += dt`, `smooth_loss = ...`: loop
  state and counters), by a second plain assignment in any block (`if resume: iter_num = ...`:
  which literal counts is unclear), or in a function that declares it `global`. An augmented
  assignment outside any loop adjusts the value once and keeps the knob (nanoGPT's
  `gradient_accumulation_steps //= ddp_world_size` under `if ddp:`);
- reporting constants: a name that is read, but only to report, i.e. every read is inside
  print(...) (print0 and the like), a call on logging/logger/log/wandb/writer, an f-string, or
  the value of an assignment to names that are themselves only reported (`mfu = flops / PEAK`,
  then `print(f"{mfu}")`). A name read nowhere stays a knob: a fragment of a script, or a script
  whose runtime reads its globals, gives no evidence either way;
- hardware peaks and MFU, by name (REPORTING: `H100_BF16_PEAK_FLOPS`, `flops_promised`, `mfu`),
  whatever their case, in case the value escapes the flow above (passed to an estimate_mfu()); and
  budgets (`TIME_BUDGET` of autoresearch's prepare.py): the budget is the runtime's, the same for
  every variant, so a variant that sets its own would buy itself compute.
A `# knob:` comment opts names back in (NOT_KNOBS, REPORTING), never the state and reporting
rules: those describe what the code does with the value.

Distributions. A trailing comment overrides: `# knob: log[1e-4, 1e-1]`, `float[0, 0.5]`,
`int[2, 12]`, `int[64, 1024, step=64]`, `int[1, 64, log]`, `choice[relu2, gelu]`, `fixed`; it
may follow other comment text (`# model width; knob: int[64, 512, step=64]`) and end at a `;`.
Choices are Python literals where they parse (numbers, True/False), else bare strings. Without
a comment, the first row of RULES whose name pattern and value condition match decides:

    name contains               default       distribution
    (any)                       bool          choice[True, False]
    (any)                       str           fixed (tunable only through a choice comment)
    eps, epsilon                float >= 0    log[x/100, 100x]; 0 -> float[0, 1e-6]
    weight_decay, wd            float >= 0    log[x/10, 10x]; 0 -> float[0, 0.3]
    beta, momentum, decay, ema  0.5 < x < 1   float[1-(1-x)*4, 1-(1-x)/4] within [0.5, 0.9999]
    frac, ratio, drop, prob     0 <= x <= 1   float[x-0.3, x+0.3] within [0, 1]; dropout 0 -> [0, 0.3]
    lr, learning_rate, rate,    float >= 0    log[x/10, 10x]; 0 -> float[0, 0.01]
      decay
    cap (softcaps)              float >= 0    log[x/10, 10x]; 0 -> float[0, 30]
    scale, clip, temp, mult     float >= 0    log[x/10, 10x]; 0 -> float[0, 2]
    std, init                   float >= 0    log[x/4, 4x]; 0 -> float[0, 0.05]
    depth, layer                int > 0       int[max(1, x//2), 2x]
    width, dim, embd, hidden,   int > 0       int[~x/2, 2x, step=s]: s is the largest power of two
      batch, size, seq_len, ...               dividing x, at most 64 and x/4, so shapes stay GPU
                                              friendly; int[x//2, 2x, log] when s is 1
    head                        int > 0       int[max(1, x//2), 2x, log]
    (any)                       int           x > 0: int[max(1, x//2), 2x]; 0: int[0, 8];
                                              x < 0: fixed (usually a sentinel, -1 = off)
    (any)                       float         x > 0: float[x/2, 2x]; x < 0: float[2x, x/2];
                                              0: float[0, 1]

Optuna cannot sample an int on a log scale with a step, so widths and batch sizes keep the step
and are sampled uniformly over [x/2, 2x], which skews them little.

A comment `must divide NAME`, `divides NAME` or `divisor of NAME` sets Knob.divides: set_knobs
refuses values where the knob does not divide NAME's final value. Without one, an int knob of
attention heads (`n_head`, `HEADS`) divides the file's one int knob of model width (`n_embd`,
`WIDTH`, `d_model`) when there is exactly one: every GPT splits its width across its heads, and
a script seldom says so in a comment.

Ranges guide sampling; they do not forbid. set_knobs writes any value of the knob's type (int for
int knobs, float for log/float knobs, a fixed knob keeps its default's type) and refuses only unknown
names, wrong types, values outside a choice set, and broken divisibility. It rewrites the literals
and nothing else: every other byte of the file stays as it was. Arithmetic keeps its form where one
of its numbers can carry the new value exactly: a power keeps its base and changes its exponent
(`2**19` set to 262144 is `2**18`), other operations change their first operand, else their last
(`5 * 8` set to 80 is `10 * 8`, `256 * 1024` set to 131072 is `128 * 1024`), the changed number
staying positive and of its type; where no such form evaluates to exactly the new value, the plain
literal replaces the expression.
"""
from __future__ import annotations

import ast
import difflib
import math
import numbers
import operator
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from trainer.errors import UserError
from trainer.parsing import parse_python
from trainer.program import Program, is_multi_file

if TYPE_CHECKING:
    import optuna
    import pandas

__all__ = ["Distribution", "Knob", "NOT_KNOBS", "REPORTING", "RULES", "Rule", "extract_knobs", "infer_distribution",
           "knob_table", "set_knobs"]

KINDS = ("log", "float", "int", "choice", "fixed")
FORMS = ("log[LOW, HIGH], float[LOW, HIGH], int[LOW, HIGH], int[LOW, HIGH, step=N], int[LOW, HIGH, log], "
         "choice[A, B, ...] or fixed")
MAX_STRING = 20  # longer strings are paths or messages, not settings

# Lowercase module-level names that configure the run rather than the training (nanoGPT keeps them
# next to its hyperparameters). Each pattern is re.search-ed on the name; UPPER_CASE names are not
# filtered: in a train.py written for evotrain that block is the author's list of knobs.
NOT_KNOBS: dict[str, str] = {
    "paths and data": r"(^|_)(dir|path|file|filename|dataset)$|^(data|out|dataset)_",
    "logging": r"^(wandb|tensorboard|log|logging|print|verbose|profile|debug)(_|$)",
    "evaluation cadence": r"^eval_|_(interval|every|freq)$",
    "checkpointing": r"checkpoint|ckpt|(^|_)save(_|$)|^resume|^init_from$",
    "device, dtype, backend": r"^(device|device_type|dtype|ptdtype|compile|backend|cuda|gpu|amp|num_workers|port)$",
    "seeds": r"seed",
    "distributed": r"^ddp|world_size|(^|_)rank$|^master_",
    "loop state": r"^(iter_num|local_iter_num|step|epoch|t0|raw_model)$|^(best|running)_|^[a-z]\d*$",
    "vocabulary (set by the data)": r"vocab",
}

# Hardware peaks and MFU, whatever the case of the name: they only report how fast training ran; and budgets,
# which are the runtime's to set.
REPORTING = r"peak\w*flops|flops_promised|(^|_)mfu(_|$)|budget"
MAX_EXPONENT = 256  # `2**19` is a knob, `10**10**10` is not computed

_UPPER = re.compile(r"[A-Z][A-Z0-9_]*")
_LOWER = re.compile(r"[a-z][a-z0-9_]*")
_OVERRIDE = re.compile(r"(?:^|[\s;,(#])knob:\s*([^;]*)")
_FORM = re.compile(r"(?P<kind>log|float|int|choice)\[(?P<args>.*)\]")
_DIVIDES = re.compile(r"(?:must\s+divide|divides|divisor\s+of)\s+([A-Za-z_]\w*)")


# ---------------------------------------------------------------- records
@dataclass(frozen=True)
class Distribution:
    kind: str                           # one of KINDS
    low: float | int | None = None
    high: float | int | None = None
    step: int | None = None             # int kinds: values are low + k * step
    log: bool = False                   # int kinds sampled on a log scale
    choices: tuple = ()

    def __post_init__(self) -> None:
        problem = _problem(self)
        if problem:
            raise ValueError(f"{problem}: {self}")

    def to_optuna(self) -> optuna.distributions.BaseDistribution:
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "fixed":
            raise ValueError("a fixed knob has no distribution to sample; leave it out of the search space")
        if self.kind == "choice":
            return CategoricalDistribution(self.choices)
        if self.kind == "int":
            return IntDistribution(self.low, self.high, log=self.log, step=self.step or 1)
        return FloatDistribution(self.low, self.high, log=self.kind == "log")

    def __str__(self) -> str:
        if self.kind == "fixed":
            return "fixed"
        if self.kind == "choice":
            items = [_choice_text(c) for c in self.choices]
        else:
            items = [_number_text(self.low), _number_text(self.high)]
            items += [f"step={self.step}"] * bool(self.step) + ["log"] * self.log
        return f"{self.kind}[{', '.join(items)}]"


def _problem(d: Distribution) -> str:
    """Why a distribution is invalid, or ""."""
    if d.kind not in KINDS:
        return f"kind must be one of {KINDS}"
    if d.kind == "choice":
        if not all(c is None or isinstance(c, (bool, int, float, str)) for c in d.choices):
            return "choices must be numbers, bools, strings or None"
        return "" if d.choices else "choice needs at least one value"
    if d.kind == "fixed":
        return ""
    bound = numbers.Integral if d.kind == "int" else numbers.Real
    if not all(isinstance(v, bound) and not isinstance(v, bool) and math.isfinite(v) for v in (d.low, d.high)):
        return f"{d.kind} bounds must be finite {'integers' if d.kind == 'int' else 'numbers'}"
    if not d.low < d.high:
        return "the low bound must be below the high bound"
    if d.kind == "log" and d.low <= 0:
        return "a log range must be positive"
    if d.kind != "int":
        return ""
    if d.step is not None and (d.step < 1 or (d.high - d.low) % d.step):
        return "step must be positive and divide high - low"
    if d.log and (d.step or 1) > 1:
        return "Optuna cannot sample an int on a log scale with a step; drop one of them"
    return ""


FIXED = Distribution("fixed")


@dataclass(frozen=True)
class Knob:
    name: str                  # "LEARNING_RATE", "learning_rate", "ADAM_BETAS[1]"
    default: object            # current value: int, float, bool or str
    distribution: Distribution
    line: int                  # 1-based line of the literal
    divides: str | None = None  # name of the knob this one must divide


# ---------------------------------------------------------------- inference
@dataclass(frozen=True)
class Rule:
    what: str
    pattern: str                                  # re.search-ed on the lowercased name; "" matches all
    kind: type                                    # exact type of the default: bool, str, int or float
    make: Callable[[Any], Distribution | None]    # None: the value does not fit, try the next rule


def _nice(x: float) -> float:
    """Drop float noise from computed bounds (0.6000000000000001 -> 0.6)."""
    return float(f"{x:.12g}")


def _log(factor: float, zero_high: float) -> Callable[[float], Distribution | None]:
    def make(x: float) -> Distribution | None:
        if x > 0:
            return Distribution("log", _nice(x / factor), _nice(x * factor))
        return Distribution("float", 0.0, zero_high) if x == 0 else None

    return make


def _below_one(x: float) -> Distribution | None:
    if not 0.5 < x < 1:
        return None
    high = min(1 - (1 - x) / 4, max(0.9999, x))
    return Distribution("float", _nice(max(0.5, 1 - (1 - x) * 4)), _nice(high))


def _fraction(x: float) -> Distribution | None:
    return Distribution("float", _nice(max(0.0, x - 0.3)), _nice(min(1.0, x + 0.3))) if 0 <= x <= 1 else None


def _halve_double(x: int, log: bool = False) -> Distribution | None:
    return Distribution("int", max(1, x // 2), 2 * x, log=log) if x > 0 else None


def _aligned(x: int) -> Distribution | None:
    """Sizes stay multiples of the default's power-of-two alignment (capped so the range has values)."""
    if x <= 0:
        return None
    step = 1
    while x % (step * 2) == 0 and step * 2 <= min(64, x // 4):
        step *= 2
    low = max(step, x // 2 // step * step)
    return Distribution("int", low, 2 * x, step=step) if step > 1 else Distribution("int", low, 2 * x, log=True)


def _other_int(x: int) -> Distribution:
    if x > 0:
        return _halve_double(x)
    return Distribution("int", 0, 8) if x == 0 else FIXED


def _other_float(x: float) -> Distribution:
    if x == 0:
        return Distribution("float", 0.0, 1.0)
    return Distribution("float", *sorted((_nice(x / 2), _nice(x * 2))))


RULES: tuple[Rule, ...] = (
    Rule("bools", "", bool, lambda x: Distribution("choice", choices=(True, False))),
    Rule("strings", "", str, lambda x: FIXED),
    Rule("epsilons", r"(^|_)eps(ilon)?(_|$)", float, _log(100, zero_high=1e-6)),
    Rule("weight decay", r"weight_decay|(^|_)wd(_|$)", float, _log(10, zero_high=0.3)),
    Rule("betas, momentum, EMA decays", r"beta|momentum|decay|ema", float, _below_one),
    Rule("fractions, ratios, dropout", r"frac|ratio|drop|prob|pct|percent", float, _fraction),
    Rule("learning rates, decays", r"(^|_)lrs?(_|$)|learning_rate|rate|decay", float, _log(10, zero_high=0.01)),
    Rule("softcaps", r"cap", float, _log(10, zero_high=30.0)),
    Rule("scales, clipping, temperatures", r"scale|clip|temp|mult|gain", float, _log(10, zero_high=2.0)),
    Rule("init scales", r"std|init", float, _log(4, zero_high=0.05)),
    Rule("depth", r"depth|layer", int, _halve_double),
    Rule("widths, dims, batch and sequence sizes",
         r"width|dim|embd|embed|hidden|channel|batch|size|seq_len|ctx|d_model", int, _aligned),
    Rule("heads", r"head", int, lambda x: _halve_double(x, log=True)),
    Rule("other ints", "", int, _other_int),
    Rule("other floats", "", float, _other_float),
)


def infer_distribution(name: str, value: object) -> Distribution:
    """The first RULES row that fits `name` (lowercased, tuple index dropped) and `value`."""
    base = name.split("[")[0].lower()
    for rule in RULES:
        if type(value) is rule.kind and re.search(rule.pattern, base):
            made = rule.make(value)
            if made is not None:
                return made
    raise AssertionError(f"RULES has no catch-all row for {value!r}")


# ---------------------------------------------------------------- comments
def _override(comment: str, line: int, default: object) -> Distribution | None:
    found = _OVERRIDE.search(comment)
    if found is None:
        return None
    spec = found.group(1).strip()
    try:
        distribution = _parse_form(spec)
    except ValueError as error:
        raise UserError(f"line {line}: cannot read `knob: {spec}` ({error}); write one of {FORMS}") from None
    problem = _default_problem(distribution, default)
    if problem:
        raise UserError(f"line {line}: `knob: {spec}` does not fit the value {default!r}: {problem}")
    return distribution


def _parse_form(spec: str) -> Distribution:
    if spec == "fixed":
        return FIXED
    form = _FORM.fullmatch(spec)
    if form is None:
        raise ValueError("unknown form")
    kind, args = form["kind"], form["args"]
    if kind == "choice":
        return Distribution("choice", choices=_choices(args))
    parts = [p.strip() for p in args.split(",")]
    flags = parts[2:]
    if len(parts) < 2 or (kind != "int" and flags) or len(flags) > 1:
        raise ValueError(f"{kind} takes LOW, HIGH" + (" and step=N or log" if kind == "int" else ""))
    if kind != "int":
        return Distribution(kind, float(parts[0]), float(parts[1]))
    step = re.fullmatch(r"step\s*=\s*(\d+)", flags[0]) if flags else None
    if flags and step is None and flags[0] != "log":
        raise ValueError(f"unknown int option {flags[0]!r}")
    step_value = int(step[1]) if step else None
    return Distribution("int", int(parts[0]), int(parts[1]), step=None if step_value == 1 else step_value,
                        log=flags == ["log"])


def _choices(args: str) -> tuple:
    try:
        return tuple(ast.literal_eval(f"[{args}]"))
    except (ValueError, TypeError, SyntaxError):  # bare words: choice[relu2, gelu]
        return tuple(_bare(item.strip()) for item in args.split(",") if item.strip())


def _bare(text: str) -> object:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _default_problem(d: Distribution, default: object) -> str:
    if d.kind == "choice":
        return "" if _matching_choice(d, default) is not _MISSING else "the current value must be one of the choices"
    if d.kind == "fixed":
        return ""
    if isinstance(default, (bool, str)):
        return f"a {type(default).__name__} cannot take a numeric range; use choice[...]"
    if d.kind == "int" and not float(default).is_integer():
        return "an int range needs an integral value"
    return ""


def _divides(comment: str) -> str | None:
    found = _DIVIDES.search(comment)
    return found[1] if found else None


_HEADS = re.compile(r"head", re.IGNORECASE)
_WIDTH = re.compile(r"embd|width|d_model|model_dim", re.IGNORECASE)


def _heads_divide_width(sites: list[_Site]) -> list[_Site]:
    """Sites with an unstated heads-divide-width constraint filled in (see the module docstring)."""
    ints = [site.knob for site in sites if type(site.knob.default) is int]
    widths = [knob.name for knob in ints if _WIDTH.search(knob.name)]
    if len(widths) != 1:
        return sites
    return [replace(site, knob=replace(site.knob, divides=widths[0]))
            if type(site.knob.default) is int and site.knob.divides is None and _HEADS.search(site.knob.name)
            else site for site in sites]


# ---------------------------------------------------------------- finding the literals
# Read with the ast module, not libcst: knobs need only positions and values, and ast gives both
# about 100x faster (set_knobs runs once per Optuna trial, and in tests hundreds of times).
@dataclass(frozen=True)
class _Site:
    knob: Knob
    start: int   # character offsets of the literal in the source
    end: int
    text: str


def _pick_argument(device: str) -> str:
    kind = str(device).split(":")[0]
    if kind in ("cpu", "mps", "cuda"):
        return "cuda" if kind == "cuda" else "cpu"  # runtime.pick gives cpu= to every device but CUDA
    raise UserError(f"device must be cpu, mps or cuda[:N] to choose runtime.pick's argument, but got {device!r}")


def _parse(source: str) -> ast.Module:
    try:
        return parse_python(source)
    except (SyntaxError, ValueError) as error:  # ValueError: null bytes
        raise UserError(f"train.py does not parse: {error}; fix the syntax first") from None


class _Lines:
    """Maps ast positions (1-based line, UTF-8 byte column) to character offsets in the source."""

    def __init__(self, source: str) -> None:
        self.lines = re.findall(r".*?(?:\r\n|\r|\n)|.+\Z", source, re.S)  # the newlines Python's tokenizer knows
        self.starts = [0]
        for line in self.lines:
            self.starts.append(self.starts[-1] + len(line))

    def column(self, line: int, byte_column: int) -> int:
        return len(self.lines[line - 1].encode()[:byte_column].decode())

    def offset(self, line: int, byte_column: int) -> int:
        return self.starts[line - 1] + self.column(line, byte_column)

    def after(self, node: ast.AST) -> str:
        """The rest of the node's last line: a trailing comment, `; more code`, or nothing."""
        return self.lines[node.end_lineno - 1][self.column(node.end_lineno, node.end_col_offset):].strip()


def _assignment(statement: ast.stmt) -> tuple[str, ast.expr] | None:
    """(name, value) of `NAME = value` or `NAME: type = value`."""
    if isinstance(statement, ast.Assign) and len(statement.targets) == 1 and isinstance(statement.targets[0], ast.Name):
        return statement.targets[0].id, statement.value
    if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name) and statement.value:
        return statement.target.id, statement.value
    return None


_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp,
           ast.GeneratorExp)
_LOOPS = (ast.For, ast.AsyncFor, ast.While)


def _state(module: ast.Module) -> set[str]:
    """Names that hold state, not configuration: bound inside a module-level loop, bound by two plain assignments
    anywhere in module-level code, or declared `global` in a function (only a function that rebinds a name needs it)."""
    plain, state = Counter(), set()

    def visit(node: ast.AST, in_loop: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, _SCOPES):
                continue
            if isinstance(child, ast.AugAssign) and isinstance(child.target, ast.Name):
                if in_loop:  # a counter or a running total; outside a loop, a one-off adjustment of the knob
                    state.add(child.target.id)
                visit(child.value, in_loop)
                continue
            if isinstance(child, ast.Name) and isinstance(child.ctx, ast.Store):
                plain[child.id] += 1
                if in_loop:
                    state.add(child.id)
            visit(child, in_loop or isinstance(child, _LOOPS))

    visit(module, False)
    state |= {name for name, count in plain.items() if count > 1}
    return state | {name for node in ast.walk(module) if isinstance(node, ast.Global) for name in node.names}


_LOGGERS = {"logging", "logger", "log", "wandb", "writer"}


def _reports(call: ast.Call) -> bool:
    """print(...), print0(...), logging.info(...), logger.warning(...), wandb.log(...), writer.add_scalar(...)."""
    func = call.func
    if isinstance(func, ast.Name):
        return func.id.startswith("print")
    return isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id in _LOGGERS


def _reported(module: ast.Module) -> set[str]:
    """Names that are read, and only to report: every read is inside a reporting call or an f-string, or in the value
    of an assignment to names that are themselves only reported (`mfu = flops / PEAK_FLOPS`, then `print(mfu)`)."""
    flows = defaultdict(list)  # name -> per read: the names it is assigned to (none: reported), or None: used

    def visit(node: ast.AST, flow: frozenset | None) -> None:
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            flows[node.id].append(flow)
            return
        if isinstance(node, ast.JoinedStr) or isinstance(node, ast.Call) and _reports(node):
            flow = frozenset()
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            parts = [n for t in targets for n in ast.walk(t)]
            plain = all(isinstance(n, (ast.Name, ast.Tuple, ast.List, ast.Starred, ast.expr_context)) for n in parts)
            visit(node.value, frozenset(n.id for n in parts if isinstance(n, ast.Name)) if plain else None)
            for target in targets:  # `d[KEY] = ...` reads KEY
                visit(target, flow)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, flow)

    visit(module, None)
    reported = {name for name, reads in flows.items() if None not in reads}
    while True:  # drop names that feed a name still in use, until none does
        kept = {name for name in reported if all(read <= reported for read in flows[name])}
        if kept == reported:
            return reported
        reported = kept


def _candidate(name: str, comment: str) -> bool:
    lower = _LOWER.fullmatch(name)
    if not (lower or _UPPER.fullmatch(name)):
        return False
    patterns = [REPORTING, *NOT_KNOBS.values()] if lower else [REPORTING]
    excluded = any(re.search(pattern, name.lower()) for pattern in patterns)
    return not excluded or _OVERRIDE.search(comment) is not None


_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
              ast.FloorDiv: operator.floordiv, ast.Pow: operator.pow}


def _number(node: ast.expr) -> object:
    """The int or float value of a number literal or of arithmetic on number literals (+ - * / // ** and unary
    minus); _MISSING for anything else, names included."""
    if isinstance(node, ast.Constant):
        return node.value if type(node.value) in (int, float) else _MISSING
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _number(node.operand)
        return _MISSING if inner is _MISSING else -inner
    if not (isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS):
        return _MISSING
    left, right = _number(node.left), _number(node.right)
    if left is _MISSING or right is _MISSING or isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
        return _MISSING
    try:
        value = _OPERATORS[type(node.op)](left, right)
        return value if type(value) in (int, float) and math.isfinite(value) else _MISSING  # (-8) ** 0.5 is complex
    except (ArithmeticError, ValueError):  # 1 / 0, 2.0 ** 5000, an int too large for a float
        return _MISSING


def _scalar(node: ast.expr) -> object:
    if isinstance(node, ast.Constant) and isinstance(node.value, (bool, str)):
        fits = isinstance(node.value, bool) or len(node.value) <= MAX_STRING
        return node.value if fits else _MISSING
    return _number(node)


def _literals(name: str, value: ast.expr) -> list[tuple[str, ast.expr, object]]:
    """(knob name, node, value) for a scalar literal or each element of a tuple of numbers."""
    if isinstance(value, ast.Tuple):
        values = [_number(e) for e in value.elts]
        if not values or any(v is _MISSING for v in values):
            return []
        return [(f"{name}[{i}]", e, v) for i, (e, v) in enumerate(zip(value.elts, values))]
    scalar = _scalar(value)
    return [] if scalar is _MISSING else [(name, value, scalar)]


def _picked(value: ast.expr, argument: str) -> ast.expr | None:
    """The argument for the active device of `runtime.pick(cpu=..., cuda=...)`, or the value itself."""
    func = value.func if isinstance(value, ast.Call) else None
    if not (isinstance(func, ast.Attribute) and func.attr == "pick"
            and isinstance(func.value, ast.Name) and func.value.id == "runtime"):
        return value
    return next((k.value for k in value.keywords if k.arg == argument), None)


def _statements(module: ast.Module, lines: _Lines) -> list[tuple[ast.stmt, str]]:
    """(statement, trailing comment) for each module-level statement alone on its lines."""
    body, alone = module.body, []
    for i, statement in enumerate(body):
        rest = lines.after(statement)
        shares_line = i > 0 and body[i - 1].end_lineno == statement.lineno
        if not shares_line and (not rest or rest.startswith("#")):
            alone.append((statement, rest[1:]))
    return alone


def _sites(source: str, device: str) -> list[_Site]:
    argument = _pick_argument(device)
    module, lines = _parse(source), _Lines(source)
    not_configuration = _state(module) | _reported(module)
    sites = []
    for statement, comment in _statements(module, lines):
        assignment = _assignment(statement)
        if assignment is None or assignment[0] in not_configuration or not _candidate(assignment[0], comment):
            continue
        name, value = assignment
        picked = _picked(value, argument)
        for knob_name, node, default in _literals(name, picked) if picked is not None else ():
            distribution = _override(comment, statement.end_lineno, default) or infer_distribution(knob_name, default)
            knob = Knob(knob_name, default, distribution, node.lineno, _divides(comment))
            start = lines.offset(node.lineno, node.col_offset)
            end = lines.offset(node.end_lineno, node.end_col_offset)
            sites.append(_Site(knob, start, end, source[start:end]))
    return _heads_divide_width(sites)


# ---------------------------------------------------------------- public API
def extract_knobs(source: str, device: str = "cpu") -> list[Knob]:
    """The knobs of a train.py in source order; `device` picks runtime.pick's argument. Of a program
    (trainer.program), every file's, a module's named `model.py::NAME`."""
    if is_multi_file(source):
        program = Program.parse(source)
        return [replace(knob, name=program.qualify(name, knob.name)) for name, text in program.files
                for knob in extract_knobs(text, device)]
    return [site.knob for site in _sites(source, device)]


def set_knobs(source: str, values: Mapping[str, object], device: str = "cpu") -> str:
    """The source with the named knobs' literals rewritten; every other byte unchanged."""
    if is_multi_file(source):
        return _set_program_knobs(Program.parse(source), values, device)
    sites = {site.knob.name: site for site in _sites(source, device)}
    for name in values:
        if name not in sites:
            raise UserError(_unknown(name, list(sites)))
    new = {name: _coerce(sites[name].knob, value) for name, value in values.items()}
    _check_divisibility(sites, new)
    edits = sorted((sites[name] for name, value in new.items() if not _same(value, sites[name].knob.default)),
                   key=lambda site: site.start, reverse=True)
    for site in edits:
        source = source[:site.start] + _new_text(new[site.knob.name], site.text) + source[site.end:]
    return source


def _set_program_knobs(program: Program, values: Mapping[str, object], device: str) -> str:
    by_file: dict[str, dict[str, object]] = {}
    for name, value in values.items():
        try:
            file, local = program.locate(name)
        except KeyError:
            raise UserError(_unknown(name, [knob.name for knob in extract_knobs(program.text, device)])) from None
        by_file.setdefault(file, {})[local] = value
    return program.with_sources({file: set_knobs(program.source(file), local_values, device)
                                 for file, local_values in by_file.items()}).text


def knob_table(source: str, device: str = "cpu") -> pandas.DataFrame:
    """One row per knob: name, default, distribution (as in a `# knob:` comment), line, divides, and derived: the
    module-level names computed from the knob, which follow it when it is set."""
    import pandas as pd

    if is_multi_file(source):
        program = Program.parse(source)
        tables = [knob_table(text, device) for _, text in program.files]
        for (name, _), table in zip(program.files, tables):
            table["name"] = [program.qualify(name, knob) for knob in table["name"]]
        return pd.concat(tables, ignore_index=True)

    derived = _derived(_parse(source))
    rows = [(k.name, k.default, str(k.distribution), k.line, k.divides or "", derived.get(k.name.split("[")[0], ""))
            for k in extract_knobs(source, device)]
    # object columns: an int default stays an int beside floats (524288, not 524288.0)
    return pd.DataFrame(rows, columns=["name", "default", "distribution", "line", "divides", "derived"], dtype=object)


def _derived(module: ast.Module) -> dict[str, str]:
    """name -> the module-level names assigned from expressions that read it (`lr_decay_iters = max_iters`)."""
    found = defaultdict(list)
    for statement in module.body:
        assignment = _assignment(statement)
        reads = {n.id for n in ast.walk(assignment[1]) if isinstance(n, ast.Name)} if assignment else ()
        for name in sorted(reads):
            found[name].append(assignment[0])
    return {name: ", ".join(targets) for name, targets in found.items()}


# ---------------------------------------------------------------- setting values
class _Missing:
    pass


_MISSING = _Missing()


def _unknown(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=3)
    hint = f"did you mean {', '.join(close)}?" if close else f"the knobs are {', '.join(known) or 'none'}"
    return f"unknown knob {name!r}; {hint}"


def _matching_choice(d: Distribution, value: object) -> object:
    """The choice equal to value (True is not 1 here), or _MISSING."""
    return next((c for c in d.choices if c == value and isinstance(c, bool) == isinstance(value, bool)), _MISSING)


_TYPE_WORDS = {int: "an int", float: "a finite number", bool: "True or False",
               str: f"a string of at most {MAX_STRING} characters"}


def _coerce(knob: Knob, value: object) -> object:
    d = knob.distribution
    if d.kind == "choice":
        choice = _matching_choice(d, value)
        if choice is _MISSING:
            raise UserError(f"{knob.name}={value!r} is not among {d}; pick one of those or widen its `# knob:` comment")
        return choice
    wanted = {"int": int, "log": float, "float": float}.get(d.kind, type(knob.default))
    converted = _as_type(value, wanted)
    if converted is _MISSING:
        raise UserError(f"{knob.name} takes {_TYPE_WORDS[wanted]}, but got {value!r}")
    return converted


def _as_type(value: object, wanted: type) -> object:
    if wanted is bool or wanted is str:
        fits = isinstance(value, wanted) and (wanted is bool or len(value) <= MAX_STRING)
        return value if fits else _MISSING
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        return _MISSING
    if wanted is float:
        return float(value)
    # An integral float is accepted for an int knob: tables of trials often hold ints as floats.
    return int(value) if isinstance(value, numbers.Integral) or float(value).is_integer() else _MISSING


def _same(value: object, default: object) -> bool:
    return type(value) is type(default) and value == default


def _check_divisibility(sites: Mapping[str, _Site], new: Mapping[str, object]) -> None:
    for name, site in sites.items():
        target = site.knob.divides
        if target not in sites or (name not in new and target not in new):
            continue
        divisor, dividend = new.get(name, site.knob.default), new.get(target, sites[target].knob.default)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (divisor, dividend)):
            continue  # a divisibility comment on a non-integer knob states nothing checkable
        if not divisor or dividend % divisor:
            raise UserError(f"{name}={divisor!r} must divide {target}={dividend!r} (line {site.knob.line}); "
                            f"choose {name} among the divisors of {target}")


def _new_text(value: object, old_text: str) -> str:
    """The text that replaces old_text: arithmetic in its own form where that is exact, else a literal."""
    rewritten = _same_form(value, old_text) if type(value) in (int, float) else None
    return rewritten or _literal_text(value, old_text)


def _same_form(value: int | float, old_text: str) -> str | None:
    """old_text, arithmetic on number literals, with one number changed so that it evaluates to exactly value;
    None when old_text is a plain literal or no single number can carry value."""
    wrapped = f"({old_text})"  # parses an expression that spans lines inside the statement's parentheses
    expression, lines = ast.parse(wrapped, mode="eval").body, _Lines(wrapped)
    if isinstance(expression, ast.Constant):
        return None
    for leaf, number in _leaf_values(expression, Fraction(value)):
        start, end = lines.offset(leaf.lineno, leaf.col_offset), lines.offset(leaf.end_lineno, leaf.end_col_offset)
        text = wrapped[1:start] + _literal_text(number, "") + wrapped[end:-1]
        if _same(_number(ast.parse(f"({text})", mode="eval").body), value):  # solving proposes, evaluation decides
            return text
    return None


# Per operator, the value of its left operand, then of its right, that makes `left op right` equal v
# given the other operand's value; a power changes only its exponent.
_INVERSES: dict[type, tuple[Callable | None, Callable]] = {
    ast.Add: (lambda v, b: v - b, lambda v, a: v - a),
    ast.Sub: (lambda v, b: v + b, lambda v, a: a - v),
    ast.Mult: (lambda v, b: v / b, lambda v, a: v / a),
    ast.Div: (lambda v, b: v * b, lambda v, a: a / v),
    ast.FloorDiv: (lambda v, b: v * b, lambda v, a: a / v),
    ast.Pow: (None, lambda v, a: Fraction(round(math.log(v, a)))),
}


def _leaf_values(node: ast.expr, target: Fraction) -> Iterator[tuple[ast.Constant, int | float]]:
    """(number literal, new value) pairs that may make node evaluate to target, the first operand's first."""
    if isinstance(node, ast.Constant):
        number = _positive(target, type(node.value))
        if number is not None:
            yield node, number
    elif isinstance(node, ast.UnaryOp):
        yield from _leaf_values(node.operand, -target)
    else:
        operands = (node.left, node.right)
        values = [Fraction(_number(operand)) for operand in operands]
        for i, inverse in enumerate(_INVERSES[type(node.op)]):
            try:
                wanted = inverse(target, values[1 - i]) if inverse else None
            except (ArithmeticError, ValueError):  # a zero operand, the log of a negative number or base 1
                continue
            if wanted is not None:
                yield from _leaf_values(operands[i], wanted)


def _positive(x: Fraction, kind: type) -> int | float | None:
    """x as a positive number of the literal's kind, if it is one."""
    if x <= 0 or (kind is int and x.denominator != 1):
        return None
    try:
        return kind(x)
    except OverflowError:
        return None


def _literal_text(value: object, old_text: str) -> str:
    if isinstance(value, float):
        return _float_text(value, keep_point=True)  # "2" would re-read as an int knob
    if isinstance(value, str):
        return _quoted(value, old_text)
    return repr(value)


def _float_text(x: float, keep_point: bool) -> str:
    """The shorter of repr and scientific notation (0.003 -> 3e-3); both read back exactly."""
    if not keep_point and x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    sci = next(text for digits in range(17) if float(text := f"{x:.{digits}e}") == x)
    mantissa, _, exponent = sci.partition("e")
    return min(repr(x), f"{mantissa}e{int(exponent)}", key=len)


def _quoted(value: str, old_text: str) -> str:
    """repr, in the old literal's quote style where that needs no escaping."""
    text = repr(value)
    double = old_text.lstrip("rRuU").startswith('"')
    return f'"{text[1:-1]}"' if double and text[0] == "'" and '"' not in value and "'" not in value else text


def _number_text(x: float | int) -> str:
    return _float_text(x, keep_point=False) if isinstance(x, float) else repr(x)


def _choice_text(choice: object) -> str:
    """Bare where a `choice[...]` comment reads it back as the same value, else repr."""
    bare = isinstance(choice, str) and choice == choice.strip() and not re.search(r"[,\[\]'\"]", choice)
    return choice if bare and isinstance(_bare(choice), str) else repr(choice)
