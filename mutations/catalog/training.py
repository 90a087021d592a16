"""Training moves: the optimizer (Muon, per-group AdamW, epsilon, weight decay), the schedule (WSD, a
short warmup), regularization (dropout), the shape (depth, width, heads, batch) and throughput (fused
cross-entropy, torch.compile, bf16 autocast).

Patterns they look for: an AdamW construction `torch.optim.AdamW(...)` (its model is the `X` of an
`X.parameters()` next to it), the training loop `while runtime.keep_training():`, its lr schedule
`for group in optimizer.param_groups: group["lr"] = ...`, and module-level constants under their usual
spellings (`_NAMES`). Moves that give parameter groups their own learning rate make that schedule line
scale each group's own initial lr, the way torch's LR schedulers record `initial_lr`.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from string import Template
from typing import ClassVar

import libcst as cst
import libcst.matchers as m
from libcst.metadata import ParentNodeProvider

from mutations.catalog import _cst
from mutations.catalog._base import Move, NotApplicable

Number = int | float

# The usual spellings of a hyperparameter constant, looked up in this order.
_NAMES: dict[str, tuple[str, ...]] = {
    "depth": ("DEPTH", "N_LAYER", "n_layer", "N_LAYERS", "n_layers"),
    "width": ("WIDTH", "N_EMBD", "n_embd", "D_MODEL", "d_model", "MODEL_DIM"),
    "heads": ("HEADS", "N_HEAD", "n_head", "N_HEADS", "n_heads"),
    "batch": ("BATCH_SIZE", "batch_size", "DEVICE_BATCH_SIZE"),
    "learning rate": ("LEARNING_RATE", "learning_rate", "LR"),
    "warmup": ("WARMUP_FRACTION", "WARMUP_RATIO", "warmup_fraction", "WARMUP_STEPS", "warmup_iters"),
    "eps": ("ADAM_EPS", "adam_eps", "EPS"),
    "weight_decay": ("WEIGHT_DECAY", "weight_decay"),
}


def _call_of(*names: str) -> m.Call:
    return m.Call(func=m.OneOf(*(m.Attribute(attr=m.Name(n)) for n in names), *(m.Name(n) for n in names)))


_ADAMW = _call_of("AdamW")
_ADAM = _call_of("AdamW", "Adam", "MuonWithAdamW")  # the muon move's optimizer passes its options to AdamW
_SDPA = _call_of("scaled_dot_product_attention")
_DROPOUT = _call_of("Dropout")
_MODEL_PARAMETERS = m.Call(func=m.Attribute(attr=m.Name("parameters") | m.Name("named_parameters")
                                            | m.Name("named_modules")))
_TRAINING_LOOP = m.While(test=m.Call(func=m.Attribute(value=m.Name("runtime"), attr=m.Name("keep_training"))))
_LR_SET = m.Assign(targets=[m.AssignTarget(target=m.Subscript(slice=[m.SubscriptElement(slice=m.Index(
    value=m.SimpleString(value=m.MatchIfTrue(lambda quoted: quoted[1:-1] == "lr"))))]))])
_LR_LOOP = m.For(iter=m.Attribute(attr=m.Name("param_groups")),
                 body=m.MatchIfTrue(lambda body: _cst.contains(body, _LR_SET)))
_IMPORTS_TORCH = m.Import(names=[m.ZeroOrMore(), m.ImportAlias(name=m.Name("torch"), asname=None), m.ZeroOrMore()])
_AUTOCAST = m.Call(func=m.Attribute(attr=m.Name("autocast")))
_NEXT_BATCH = m.Call(func=m.Attribute(value=m.Name("runtime"), attr=m.Name("next_batch")))




def _keyword(call: cst.Call, keyword: str) -> cst.BaseExpression | None:
    return next((a.value for a in call.args if a.keyword is not None and a.keyword.value == keyword), None)


def _parenthesized(node: cst.BaseExpression) -> cst.BaseExpression:
    """The expression, in parentheses unless it is atomic, so it can stand inside any operation."""
    if node.lpar or isinstance(node, (cst.Name, cst.Attribute, cst.Call, cst.Subscript, cst.Integer, cst.Float)):
        return node
    return node.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])


def _changed(old: cst.Module, new: cst.Module, reason: str) -> cst.Module:
    if new.deep_equals(old):
        raise NotApplicable(reason)
    return new


# ---------------------------------------------------------------- constants
def _constant_name(module: cst.Module, role: str) -> str:
    name = next((n for n in _NAMES[role] if _cst.constant_value(module, n) is not None), None)
    if name is None:
        raise NotApplicable(f"no {role} constant ({', '.join(_NAMES[role])})")
    return name


def _number(node: cst.BaseExpression) -> Number | None:
    return node.evaluated_value if isinstance(node, (cst.Integer, cst.Float)) else None


def _literal(value: Number) -> str:
    if isinstance(value, int):
        return str(value)
    text = f"{value:.6g}"
    return text if any(c in text for c in ".en") else text + ".0"


def _numbers(module: cst.Module, name: str) -> dict[str | None, Number]:
    """A constant's number per device keyword of runtime.pick (key None: one value for every device)."""
    value = _cst.constant_value(module, name)
    values = {a.keyword.value: _number(a.value) for a in value.args} if _cst.is_pick(value) else {None: _number(value)}
    if None in values.values():
        raise NotApplicable(f"{name} is not a number literal")
    return values


def _device_number(module: cst.Module, role: str, device: str | None, combine: Callable[..., int]) -> int:
    """The role's integer for one device; `combine` merges all devices' values when it has no own value."""
    values = _numbers(module, _constant_name(module, role))
    return int(values[device]) if device in values else combine(*(int(v) for v in values.values()))


def _map_numbers(module: cst.Module, name: str, change: Callable[[Number, str | None], Number]) -> cst.Module:
    """Like _cst.map_constant, but `change` also gets the runtime.pick keyword of each value."""
    devices = iter(_numbers(module, name))  # map_constant visits runtime.pick's values in this order
    return _cst.map_constant(module, name, lambda value: _cst.expr(_literal(change(_number(value), next(devices)))))


def _constant_line(name: str | None = None) -> m.SimpleStatementLine:
    """`NAME = ...` (any name when None)."""
    return m.SimpleStatementLine(body=[m.Assign(targets=[m.AssignTarget(target=m.Name(name) if name else m.Name())])])


def _assigned(statement: cst.CSTNode) -> str | None:
    return statement.body[0].targets[0].target.value if m.matches(statement, _constant_line()) else None


def _comment(module: cst.Module, name: str) -> str:
    line = next(s for s in module.body if m.matches(s, _constant_line(name)))
    return line.trailing_whitespace.comment.value if line.trailing_whitespace.comment else ""


def _tag(module: cst.Module, name: str, tag: str) -> cst.Module:
    """Append `tag` to the constant's trailing comment: it records a scaling that must not stack."""
    old = _comment(module, name)
    comment = cst.Comment(f"{old}; {tag}" if old else f"# {tag}")  # `;` ends a `knob:` spec before it

    def tagged(line: cst.SimpleStatementLine, _: object) -> cst.SimpleStatementLine:
        whitespace = line.trailing_whitespace
        spacing = whitespace.whitespace if whitespace.comment else cst.SimpleWhitespace("  ")
        return line.with_changes(trailing_whitespace=whitespace.with_changes(whitespace=spacing, comment=comment))

    return m.replace(module, _constant_line(name), tagged)


def _set_option(module: cst.Module, option: str, value: str) -> cst.Module:
    """Set an Adam option: its constant (by name, or the one passed as `option=`), else the literal
    `option=` argument of Adam/AdamW calls, else add that argument (calls without `**options`)."""
    passed = [a.value.value for call in m.findall(module, _ADAM) for a in call.args
              if a.keyword is not None and a.keyword.value == option and isinstance(a.value, cst.Name)]
    names = [n for n in (*_NAMES[option], *passed) if _cst.constant_value(module, n) is not None]
    if names:
        if set(_numbers(module, names[0]).values()) == {float(value)}:
            raise NotApplicable(f"{option} is already {value} ({names[0]})")
        return _cst.set_constant(module, names[0], value)

    def set_argument(call: cst.Call, _: object) -> cst.Call:
        if _keyword(call, option) is not None:
            return call.with_changes(args=[a.with_changes(value=_cst.expr(value)) if a.keyword and a.keyword.value
                                           == option else a for a in call.args])
        if any(a.star == "**" for a in call.args):
            return call
        return _with_args(call, after=_cst.expr(f"f({option}={value})").args)

    return _changed(module, m.replace(module, _ADAM, set_argument),
                    f"no Adam/AdamW construction whose {option} could be set to {value}")


def _with_args(call: cst.Call, before: Sequence[cst.Arg] = (), after: Sequence[cst.Arg] = ()) -> cst.Call:
    comma = cst.Comma(whitespace_after=cst.SimpleWhitespace(" "))
    args = [*(a.with_changes(comma=comma) for a in before), *call.args]
    if after and args:
        args[-1] = args[-1].with_changes(comma=comma) if args[-1].comma == cst.MaybeSentinel.DEFAULT else args[-1]
    return call.with_changes(args=[*args, *after])


# ---------------------------------------------------------------- the optimizer construction
class _AdamWConstruction(cst.CSTTransformer):
    """Rewrites every `AdamW(...)` call as `rewrite(call, model)`, the model being the `X` of an
    `X.parameters()` in the call, else in its function (or module-level code), else a `model` argument."""

    def __init__(self, module: cst.Module, rewrite: Callable[[cst.Call, cst.BaseExpression], cst.Call]) -> None:
        super().__init__()
        self.scopes: list[cst.CSTNode] = [
            cst.Module(body=[s for s in module.body if not isinstance(s, (cst.ClassDef, cst.FunctionDef))])]
        self.rewrite = rewrite

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.scopes.append(node)

    def leave_FunctionDef(self, original: cst.FunctionDef, updated: cst.FunctionDef) -> cst.FunctionDef:
        self.scopes.pop()
        return updated

    def leave_Call(self, original: cst.Call, updated: cst.Call) -> cst.Call:
        return self.rewrite(updated, self._model(original)) if m.matches(original, _ADAMW) else updated

    def _model(self, call: cst.Call) -> cst.BaseExpression:
        scope = self.scopes[-1]
        for where in (call, scope):
            if found := m.findall(where, _MODEL_PARAMETERS):
                return found[0].func.value
        if isinstance(scope, cst.FunctionDef) and any(p.name.value == "model" for p in scope.params.params):
            return cst.Name("model")
        raise NotApplicable("no `<model>.parameters()` next to the AdamW construction to find the model by")


def _rewrite_optimizer(module: cst.Module, rewrite: Callable[[cst.Call, cst.BaseExpression], cst.Call]) -> cst.Module:
    """Rewrite the AdamW construction; the loop's lr schedule then scales each group's own lr."""
    calls = m.findall(module, _ADAMW)
    if not calls:
        raise NotApplicable("no torch.optim.AdamW(...) construction")
    return _scale_own_lr(module.visit(_AdamWConstruction(module, rewrite)), _keyword(calls[0], "lr"))


def _scale_own_lr(module: cst.Module, peak: cst.BaseExpression | None) -> cst.Module:
    """`group["lr"] = PEAK * f(...)` -> `group["lr"] = group.setdefault("initial_lr", group["lr"]) * f(...)`
    (`own * expr / peak` when the line does not name the peak), so the schedule keeps each group's own lr."""

    def scale(assign: cst.Assign, _: object) -> cst.Assign:
        if "initial_lr" in _cst.code(assign.value):
            return assign
        group = _cst.code(assign.targets[0].target.value)
        own = _cst.expr(f'{group}.setdefault("initial_lr", {group}["lr"])')
        if isinstance(peak, cst.Name) and _cst.contains(assign.value, m.Name(peak.value)):
            return assign.with_changes(value=m.replace(assign.value, m.Name(peak.value), own))
        if peak is None:
            raise NotApplicable("the lr schedule sets an absolute lr and the AdamW has no lr= to divide it by")
        ratio = f"{_cst.code(_parenthesized(assign.value))} / {_cst.code(_parenthesized(peak))}"
        return assign.with_changes(value=_cst.expr(f"{_cst.code(own)} * {ratio}"))

    return m.replace(module, _LR_LOOP, lambda loop, _: m.replace(loop, _LR_SET, scale))


def _insert_once(module: cst.Module, name: str, code: str) -> cst.Module:
    return module if _cst.defines(module, name) else _cst.insert_definitions(module, code)


def _is_tied(module: cst.Module) -> bool:
    """`self.lm_head.weight = self.wte.weight` (either way round): the head is the embedding."""
    return _cst.contains(module, m.Assign(targets=[m.AssignTarget(target=m.Attribute(attr=m.Name("weight")))],
                                          value=m.Attribute(attr=m.Name("weight"))))


# Generated code shared by muon and per_group_adam (insert_definitions puts the blank lines between them).
_PARAMETER_ROLES = '''
def parameter_roles(model):
    """'embedding', 'head' or 'hidden' per parameter id: embeddings by module type, the output head by name."""
    roles = {}
    for name, module in model.named_modules():
        head = name.rsplit(".", 1)[-1] in ("lm_head", "head", "output", "unembed")
        role = "embedding" if isinstance(module, torch.nn.Embedding) else "head" if head else "hidden"
        for param in module.parameters(recurse=False):
            roles.setdefault(id(param), role)  # a tied head weight was seen first as the embedding
    return roles
def as_param_groups(params):
    """An optimizer's params argument as a list of group dicts with params lists."""
    params = list(params)
    groups = params if params and isinstance(params[0], dict) else [{"params": params}]
    return [{**group, "params": list(group["params"])} for group in groups]
'''

_MUON = Template('''
class MuonWithAdamW:
    """Muon on the hidden matrices, AdamW on everything else, behind one optimizer's interface.

    Muon: Jordan et al. 2024; Liu et al. 2025, "Muon is scalable for LLM training".
    """

    def __init__(self, model, params, **adamw_options):
        roles = parameter_roles(model)
        groups = as_param_groups(params)
        matrices = [p for group in groups for p in group["params"] if p.ndim == 2 and roles.get(id(p)) == "hidden"]
        taken = {id(p) for p in matrices}
        rest = [{**group, "params": [p for p in group["params"] if id(p) not in taken]} for group in groups]
        self.optimizers = [
            torch.optim.AdamW([group for group in rest if group["params"]], **adamw_options),
            torch.optim.Muon(matrices, lr=MUON_LR, momentum=MUON_MOMENTUM, weight_decay=$weight_decay),
        ]

    @property
    def param_groups(self):
        return [group for optimizer in self.optimizers for group in optimizer.param_groups]

    def step(self):
        for optimizer in self.optimizers:
            optimizer.step()

    def zero_grad(self, set_to_none=True):
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)
''')

_PER_ROLE_GROUPS = Template('''
def per_role_groups(model, params):
    """Each param group split by role; $roles get their own learning rate."""
    roles, own_lr = parameter_roles(model), $own_lr
    split = []
    for group in as_param_groups(params):
        for role in ("embedding", "head", "hidden"):
            members = [p for p in group["params"] if roles.get(id(p), "hidden") == role]
            if members:
                split.append({**group, **({"lr": own_lr[role]} if role in own_lr else {}), "params": members})
    return split
''')


class Muon(Move):
    name = "muon"
    category = "optimizer"
    description = ("Muon on the hidden 2-D matrices, AdamW on embeddings, head, biases and norms (Jordan et al. "
                   "2024; Liu et al. 2025 'Muon is scalable'; -0.51 val_bpb in the CPU pilot)")
    knobs = ("MUON_LR", "MUON_MOMENTUM")
    conflicts_with = ("per_group_adam",)  # both rewrite the AdamW construction (they stack when applied in turn)

    def transform(self, module: cst.Module) -> cst.Module:
        module = _cst.add_constants(module, [
            ("MUON_LR", "0.02", "Muon learning rate (modded-nanogpt); knob: log[3e-3, 1e-1]"),
            ("MUON_MOMENTUM", "0.95", "Muon Nesterov momentum (modded-nanogpt)"),
        ])
        decay = next((n for n in _NAMES["weight_decay"] if _cst.constant_value(module, n) is not None), "0.0")

        def use_muon(call: cst.Call, model: cst.BaseExpression) -> cst.Call:
            return _with_args(call, before=[cst.Arg(model)]).with_changes(func=cst.Name("MuonWithAdamW"))

        module = _cst.insert_definitions(_rewrite_optimizer(module, use_muon), _MUON.substitute(weight_decay=decay))
        return _cst.ensure_import(_insert_once(module, "parameter_roles", _PARAMETER_ROLES), "import torch")


class MuonMomentumWarmup(Move):
    name = "muon_momentum_warmup"
    category = "optimizer"
    description = "Muon momentum ramps 0.85 -> MUON_MOMENTUM over the budget's start (modded-nanogpt); needs muon"
    knobs = ("MUON_WARMUP_FRACTION",)
    requires = ("muon",)

    def transform(self, module: cst.Module) -> cst.Module:
        if _cst.constant_value(module, "MUON_MOMENTUM") is None:
            raise NotApplicable("needs the muon move first: no MUON_MOMENTUM constant")
        module = _cst.add_constants(module, [("MUON_WARMUP_FRACTION", "0.15", "share of the budget over which "
                                              "Muon's momentum warms up (modded-nanogpt: 300 steps)")])

        def ramp(loop: cst.For, _: object) -> cst.For:
            group = _cst.code(loop.target)
            new = _cst.statements(f'''
                if "momentum" in {group}:  # Muon's groups: momentum 0.85 -> MUON_MOMENTUM (modded-nanogpt)
                    ramp = min(runtime.progress() / MUON_WARMUP_FRACTION, 1.0)
                    {group}["momentum"] = 0.85 + (MUON_MOMENTUM - 0.85) * ramp
            ''')
            return loop.with_changes(body=loop.body.with_changes(body=[*loop.body.body, *new]))

        return _changed(module, m.replace(module, _LR_LOOP, ramp),
                        'no `for group in optimizer.param_groups: group["lr"] = ...` schedule to ramp the momentum in')


class PerGroupAdam(Move):
    """Adds HEAD_LR too when the output head is not tied to the embedding (a tied head is the embedding)."""

    name = "per_group_adam"
    category = "optimizer"
    description = "AdamW with its own learning rate for embeddings and an untied output head (nanochat; modded-nanogpt)"
    knobs = ("EMBED_LR",)

    def transform(self, module: cst.Module) -> cst.Module:
        constants = [("EMBED_LR", "1e-2", "AdamW lr of the embeddings (nanochat: 10x the matrices')")]
        if not _is_tied(module):
            constants.append(("HEAD_LR", "1e-3", "AdamW lr of the untied output head"))
        module = _cst.add_constants(module, constants)
        own_lr = ", ".join(f'"{role}": {name}' for role, name in (("embedding", "EMBED_LR"), ("head", "HEAD_LR"))
                           if _cst.constant_value(module, name) is not None)
        roles = "embeddings" if _is_tied(module) else "embeddings and the output head"

        def split(call: cst.Call, model: cst.BaseExpression) -> cst.Call:
            at = next(i for i, a in enumerate(call.args) if a.keyword is None or a.keyword.value == "params")
            grouped = _cst.expr(f"per_role_groups({_cst.code(model)}, {_cst.code(call.args[at].value)})")
            return call.with_changes(args=[a.with_changes(value=grouped) if i == at else a
                                           for i, a in enumerate(call.args)])

        module = _rewrite_optimizer(module, split)
        code = _PER_ROLE_GROUPS.substitute(roles=roles, own_lr="{" + own_lr + "}")
        module = _cst.insert_definitions(module, code)
        return _cst.ensure_import(_insert_once(module, "parameter_roles", _PARAMETER_ROLES), "import torch")


class AdamEps(Move):
    name = "adam_eps"
    category = "optimizer"
    description = "Adam epsilon 1e-8 -> 1e-10 (modded-nanogpt; nanochat)"

    def transform(self, module: cst.Module) -> cst.Module:
        return _set_option(module, "eps", "1e-10")


class WeightDecayOff(Move):
    name = "weight_decay_off"
    category = "regularization"
    description = "weight decay 0: short runs do not overfit (modded-nanogpt's early records trained without it)"

    def transform(self, module: cst.Module) -> cst.Module:
        return _set_option(module, "weight_decay", "0.0")


# ---------------------------------------------------------------- schedule
def _half_cosine(x: m.BaseMatcherNode) -> m.BaseMatcherNode:
    """`0.5 * (1 + math.cos(math.pi * X))` or `(1 + math.cos(math.pi * X)) / 2`: 1 -> 0 as X goes 0 -> 1."""
    cos = m.Call(func=m.Attribute(attr=m.Name("cos")) | m.Name("cos"),
                 args=[m.Arg(m.BinaryOperation(left=m.Attribute(attr=m.Name("pi")), operator=m.Multiply(), right=x))])
    one_plus_cos = m.BinaryOperation(left=m.Integer("1") | m.Float("1.0"), operator=m.Add(), right=cos)
    return (m.BinaryOperation(left=m.Float("0.5"), operator=m.Multiply(), right=one_plus_cos)
            | m.BinaryOperation(left=one_plus_cos, operator=m.Divide(), right=m.Integer("2") | m.Float("2.0")))


class WSDSchedule(Move):
    name = "wsd_schedule"
    category = "schedule"
    description = ("warmup-stable-decay: constant lr after warmup, then linear decay to the final lr over the last "
                   "WARMDOWN_FRACTION of the decay phase (Hu et al. 2024 MiniCPM; Hägele et al. 2024; pilot -0.36)")
    knobs = ("WARMDOWN_FRACTION",)

    def transform(self, module: cst.Module) -> cst.Module:
        if _cst.constant_value(module, "WARMDOWN_FRACTION") is not None:
            raise NotApplicable("already warm-stable-decay: WARMDOWN_FRACTION is defined")
        cosine = _half_cosine(m.SaveMatchedNode(m.DoNotCare(), "x"))

        def stable_then_linear(node: cst.BaseExpression, found: dict) -> cst.BaseExpression:
            return _cst.expr(f"min(1.0, (1 - {_cst.code(_parenthesized(found['x']))}) / WARMDOWN_FRACTION)")

        lr_function = m.FunctionDef(name=m.Name(m.MatchIfTrue(lambda n: "lr" in n.lower() or "schedule" in n.lower())))
        new = _changed(module, m.replace(module, lr_function, lambda f, _: m.replace(f, cosine, stable_then_linear)),
                       "no half-cosine 0.5 * (1 + math.cos(math.pi * t)) in an lr schedule function")
        return _cst.add_constants(new, [("WARMDOWN_FRACTION", "0.4", "linear decay over this last share of the "
                                         "post-warmup budget (WSD); knob: float[0.1, 1.0]")])


# ---------------------------------------------------------------- constants scaled by a factor
class _Scale(Move):
    """Multiply a hyperparameter constant (every device's value of runtime.pick), rounding integers; the
    constant's comment records it (`; deeper x1.5`) so the same move does not stack."""

    role: ClassVar[str]
    factor: ClassVar[float]

    def transform(self, module: cst.Module) -> cst.Module:
        name = _constant_name(module, self.role)
        tag = f"{self.name} x{self.factor:g}"
        if tag in _comment(module, name):
            raise NotApplicable(f"already {tag}: the comment of {name} records it")

        def scale(old: Number, device: str | None) -> Number:
            new = self.adjust(module, device, max(1, int(old * self.factor + 0.5)) if isinstance(old, int)
                              else old * self.factor)
            if new == old:
                raise NotApplicable(f"{self.name} leaves {name} = {old} unchanged")
            return new

        return _tag(_map_numbers(module, name, scale), name, tag)

    def adjust(self, module: cst.Module, device: str | None, value: Number) -> Number:
        """The scaled value made valid for one device (keyword of runtime.pick, None for all)."""
        return value


class HigherLR(_Scale):
    name = "higher_lr"
    category = "optimizer"
    description = "peak learning rate x3 (CPU pilot in DESIGN.md: 3e-3 vs 1e-3 gave -0.45 val_bpb)"
    role, factor = "learning rate", 3.0


class ShortWarmup(_Scale):
    """A share of the budget, not a fixed step count: progress() is a budget fraction (tokens or seconds), and
    each fidelity rung must stay a complete shorter training with the same schedule shape."""

    name = "short_warmup"
    category = "schedule"
    description = "warmup x0.2 (baseline: 10% -> 2% of the budget; modded-nanogpt and nanochat warm up briefly)"
    role, factor = "warmup", 0.2


class Deeper(_Scale):
    name = "deeper"
    category = "shape"
    description = "depth x1.5 (Kaplan et al. 2020: loss follows parameters, the shape matters little)"
    role, factor = "depth", 1.5


class Wider(_Scale):
    name = "wider"
    category = "shape"
    description = "width x1.5, rounded to a multiple of heads x 8 (Kaplan et al. 2020)"
    role, factor = "width", 1.5

    def adjust(self, module: cst.Module, device: str | None, value: Number) -> Number:
        step = 8 * _device_number(module, "heads", device, math.lcm)
        return max(step, round(value / step) * step)


class MoreHeads(_Scale):
    name = "more_heads"
    category = "shape"
    description = "attention heads x2 at the same width: smaller heads, more of them (Vaswani et al. 2017)"
    role, factor = "heads", 2.0

    def adjust(self, module: cst.Module, device: str | None, value: Number) -> Number:
        width = _device_number(module, "width", device, math.gcd)
        if width % value:
            raise NotApplicable(f"{value} heads do not divide the width {width}")
        return value


class BiggerBatch(_Scale):
    name = "bigger_batch"
    category = "shape"
    description = "batch size x2: fewer, less noisy steps (McCandlish et al. 2018, critical batch size)"
    role, factor = "batch", 2.0
    conflicts_with = ("smaller_batch",)  # the same constant


class SmallerBatch(_Scale):
    name = "smaller_batch"
    category = "shape"
    description = "batch size /2: twice the steps for the same tokens (McCandlish et al. 2018, critical batch size)"
    role, factor = "batch", 0.5


# ---------------------------------------------------------------- regularization
_DROPOUT_LAYER = m.Assign(targets=[m.AssignTarget(target=m.Attribute(value=m.Name("self")))], value=_DROPOUT)
_DROPOUT_ENTRY = m.Arg(keyword=m.Name(), value=_DROPOUT)  # nanoGPT: nn.ModuleDict(dict(drop=nn.Dropout(...), ...))


class _RemoveDropout(cst.CSTTransformer):
    """Drops dropout layers (`self.x = nn.Dropout(...)`, `x=nn.Dropout(...)` entries), unwraps their calls
    `self.x(y)` to `y`, and removes SDPA's `dropout_p=`."""

    METADATA_DEPENDENCIES = (ParentNodeProvider,)
    _BARE = (cst.Assign, cst.AnnAssign, cst.AugAssign, cst.Return, cst.Arg, cst.Expr)  # no parentheses needed

    def __init__(self, layers: set[str]) -> None:
        super().__init__()
        self.layer_call = m.Call(func=m.Attribute(attr=m.Name(m.MatchIfTrue(layers.__contains__))),
                                 args=[m.Arg(keyword=None, star="")])

    def leave_SimpleStatementLine(self, original: cst.SimpleStatementLine,
                                  updated: cst.SimpleStatementLine) -> cst.SimpleStatementLine | cst.RemovalSentinel:
        return cst.RemoveFromParent() if m.matches(updated, m.SimpleStatementLine(body=[_DROPOUT_LAYER])) else updated

    def leave_Arg(self, original: cst.Arg, updated: cst.Arg) -> cst.Arg | cst.RemovalSentinel:
        return cst.RemoveFromParent() if m.matches(updated, _DROPOUT_ENTRY) else updated

    def leave_Call(self, original: cst.Call, updated: cst.Call) -> cst.BaseExpression:
        if m.matches(updated, _SDPA) and _keyword(updated, "dropout_p") is not None:
            args = [a for a in updated.args if not (a.keyword and a.keyword.value == "dropout_p")]
            last = args[-1].with_changes(comma=updated.args[-1].comma)
            return updated.with_changes(args=[*args[:-1], last])
        if not m.matches(updated, self.layer_call):
            return updated
        inner, parent = updated.args[0].value, self.get_metadata(ParentNodeProvider, original)
        return inner if isinstance(parent, self._BARE) else _parenthesized(inner)


class DropoutRemoval(Move):
    name = "dropout_removal"
    category = "regularization"
    description = ("remove dropout: nn.Dropout layers and calls, SDPA dropout_p, non-zero dropout constants to 0; on "
                   "the baseline (DROPOUT = 0.0) it drops the no-op layers, a small speed-up (GPT-2 used 0.1)")
    # Unwrapping `self.drop(...)` edits the same forward lines as these moves.
    conflicts_with = ("relu2", "swiglu", "rope", "value_residual")

    def transform(self, module: cst.Module) -> cst.Module:
        layers = {a.targets[0].target.attr.value for a in m.findall(module, _DROPOUT_LAYER)}
        layers |= {a.keyword.value for a in m.findall(module, _DROPOUT_ENTRY)}
        new = cst.MetadataWrapper(module).visit(_RemoveDropout(layers))
        for name in [n for s in module.body if (n := _assigned(s)) and "dropout" in n.lower()]:
            new = _cst.map_constant(new, name, lambda v: _cst.expr("0.0") if _number(v) else v)
        return _changed(module, new, "no dropout to remove: no nn.Dropout layer, SDPA dropout_p or non-zero constant")


# ---------------------------------------------------------------- throughput (CUDA only)
def _model_name(module: cst.Module) -> str:
    """The model: the name passed to runtime.finish(...)."""
    calls = m.findall(module, m.Call(func=m.Attribute(value=m.Name("runtime"), attr=m.Name("finish")),
                                     args=[m.Arg(value=m.Name())]))
    if not calls:
        raise NotApplicable("no runtime.finish(model) to name the model by")
    return calls[0].args[0].value.value


def _map_training_loop(module: cst.Module, change: Callable[[cst.While], cst.While]) -> cst.Module:
    if not _cst.contains(module, _TRAINING_LOOP):
        raise NotApplicable("no `while runtime.keep_training():` training loop")
    return m.replace(module, _TRAINING_LOOP, lambda loop, _: change(loop))


class FusedCE(Move):
    name = "fused_ce"
    category = "throughput"
    description = ("liger-kernel's fused linear cross-entropy outside the compiled trunk: no full logits "
                   "(Hsu et al. 2024, Liger Kernel); flips the FUSED_CE switch")
    cuda_only = True

    def transform(self, module: cst.Module) -> cst.Module:
        if _cst.constant_value(module, "FUSED_CE") is None:
            raise NotApplicable("no FUSED_CE switch found: the fused loss must be wired into the script first")
        return _changed(module, _cst.set_constant(module, "FUSED_CE", "True"), "already FUSED_CE = True")


class TorchCompile(Move):
    name = "torch_compile"
    category = "throughput"
    description = "torch.compile the training forward on CUDA (PyTorch 2; DESIGN.md: compiled, ~45% MFU on H100)"
    cuda_only = True
    targets_baseline = False  # the baseline already compiles

    def transform(self, module: cst.Module) -> cst.Module:
        if _cst.contains(module, m.Attribute(value=m.Name("torch"), attr=m.Name("compile"))):
            raise NotApplicable("already compiled: the script calls torch.compile")
        model = _model_name(module)
        at = max((i for i, s in enumerate(module.body) if _assigned(s) == model), default=None)
        if at is None:
            raise NotApplicable(f"no module-level `{model} = ...` to compile")
        compiled = f"compiled_{model}"
        module = _map_training_loop(module, lambda loop: m.replace(
            loop, m.Call(func=m.Name(model)), lambda call, _: call.with_changes(func=cst.Name(compiled))))
        if not _cst.contains(module, m.Call(func=m.Name(compiled))):
            raise NotApplicable(f"the training loop never calls {model}(...)")
        line = _cst.statements(f'{compiled} = torch.compile({model}) if runtime.device.type == "cuda" else {model}'
                               "  # training only: evaluation shapes vary")
        module = module.with_changes(body=[*module.body[:at + 1], *line, *module.body[at + 1:]])
        return module if _cst.contains(module, _IMPORTS_TORCH) else _cst.ensure_import(module, "import torch")


class BF16Autocast(Move):
    name = "bf16_autocast"
    category = "throughput"
    description = "forward and loss under runtime.autocast(): bf16 on CUDA (Micikevicius et al. 2018, mixed precision)"
    cuda_only = True
    targets_baseline = False  # the baseline already autocasts

    def transform(self, module: cst.Module) -> cst.Module:
        if _cst.contains(module, _AUTOCAST):
            raise NotApplicable("already autocasts: the script calls an autocast()")
        steps = m.findall(module, m.Call(func=m.Attribute(value=m.Name("runtime"), attr=m.Name("step")),
                                         args=[m.Arg(), m.Arg(value=m.Name())]))
        loss = steps[0].args[1].value.value if steps else None

        def wrap(loop: cst.While) -> cst.While:
            """Everything from after `runtime.next_batch(...)` to the `loss = ...` it feeds: forward and loss."""
            body = list(loop.body.body)
            fetch = next((i for i, s in enumerate(body) if _cst.contains(s, _NEXT_BATCH)), len(body))
            last = next((i for i, s in enumerate(body) if i > fetch and _assigned(s) == loss), None)
            if last is None:
                raise NotApplicable("no `loss = ...` after runtime.next_batch(...) in the training loop")
            block = _cst.statements("with runtime.autocast():\n    pass")[0]
            inner = [body[fetch + 1].with_changes(leading_lines=[]), *body[fetch + 2:last + 1]]
            block = block.with_changes(leading_lines=body[fetch + 1].leading_lines,
                                       body=block.body.with_changes(body=inner))
            return loop.with_changes(body=loop.body.with_changes(body=[*body[:fetch + 1], block, *body[last + 1:]]))

        return _map_training_loop(module, wrap)


MOVES = [Muon, MuonMomentumWarmup, PerGroupAdam, AdamEps, WeightDecayOff, HigherLR, WSDSchedule, ShortWarmup,
         DropoutRemoval, Deeper, Wider, MoreHeads, BiggerBatch, SmallerBatch, FusedCE, TorchCompile, BF16Autocast]
