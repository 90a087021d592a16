"""Catalog moves on the transformer blocks: norms, the MLP activation, attention and its values."""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import libcst as cst
import libcst.matchers as m

from mutations.catalog import _cst
from mutations.catalog._base import Move, NotApplicable

# ---------------------------------------------------------------- matchers
_NN = m.Name("nn") | m.Attribute(value=m.Name("torch"), attr=m.Name("nn"))
# `F.fn`, `torch.nn.functional.fn` or another alias of the functional module (but not `self.fn`).
_FUNCTIONAL = m.Attribute(attr=m.Name("functional")) | m.Name(m.MatchIfTrue(lambda name: name != "self"))
_SDPA = m.Call(func=m.Attribute(attr=m.Name("scaled_dot_product_attention")) | m.Name("scaled_dot_product_attention"))
_ROTARY = m.Call(func=m.Name("apply_rotary"))
_TOKENS = re.compile(r"vocab")
_POSITIONS = re.compile(r"seq|block|pos|ctx|context|max_len")

Rule = tuple[m.BaseMatcherNode, Callable[[cst.Call], cst.BaseExpression]]


def _nn_call(name: str) -> m.Call:
    return m.Call(func=m.Attribute(value=_NN, attr=m.Name(name)))


def _fn_call(name: str, first: m.BaseMatcherNode | None = None) -> m.Call:
    func = m.Attribute(value=_FUNCTIONAL, attr=m.Name(name))
    return m.Call(func=func) if first is None else m.Call(func=func, args=[m.Arg(first), m.ZeroOrMore()])


def _self_attr(path: str) -> m.BaseMatcherNode:
    """`self.a.b` for path "a.b"."""
    node: m.BaseMatcherNode = m.Name("self")
    for part in path.split("."):
        node = m.Attribute(value=node, attr=m.Name(part))
    return node


def _embedding_call(sized_by: re.Pattern[str]) -> m.Call:
    """`nn.Embedding(n, d)` whose first argument's code matches sized_by (vocab_size, seq_len, ...)."""
    first = m.Arg(m.MatchIfTrue(lambda node: bool(sized_by.search(_cst.code(node)))))
    return m.Call(func=m.Attribute(value=_NN, attr=m.Name("Embedding")), args=[first, m.ZeroOrMore()])


# ---------------------------------------------------------------- generic edits


def _class(module: cst.Module, name: str) -> cst.ClassDef:
    return next(s for s in module.body if isinstance(s, cst.ClassDef) and s.name.value == name)




def _method(cls: cst.ClassDef, name: str) -> cst.FunctionDef | None:
    return next((f for f in _cst.methods(cls) if f.name.value == name), None)


def _edit_method(module: cst.Module, cls_name: str, method: str,
                 edit: Callable[[cst.FunctionDef], cst.FunctionDef]) -> cst.Module:
    """Rewrite one method; each edit finds its nodes afresh (libcst rebuilds nodes on every change)."""
    cls = _class(module, cls_name)
    fn = _method(cls, method)
    return _cst.replace_class(module, cls_name, cls.deep_replace(fn, edit(fn)))


def _lines_with(root: cst.CSTNode, matcher: m.BaseMatcherNode) -> list[cst.SimpleStatementLine]:
    """The statement lines of root that contain a match, in source order."""
    return [s for s in m.findall(root, m.SimpleStatementLine()) if _cst.contains(s, matcher)]


def _line_of(root: cst.CSTNode, node: cst.CSTNode) -> cst.SimpleStatementLine:
    """The statement line of root that holds this very node."""
    return _lines_with(root, m.MatchIfTrue(lambda candidate: candidate is node))[0]


def _insert(root: cst.FunctionDef, anchor: cst.CSTNode, code: str, *, after: bool = False) -> cst.FunctionDef:
    """Insert statements just before (or after) the anchor statement, wherever it is nested in root."""
    new = _cst.statements(code)
    return root.deep_replace(anchor, cst.FlattenSentinel([anchor, *new] if after else [*new, anchor]))


def _append(fn: cst.FunctionDef, code: str) -> cst.FunctionDef:
    return _insert(fn, fn.body.body[-1], code, after=True)




def _with_kwarg(call: cst.Call, name: str, code: str) -> cst.Call:
    return call.with_changes(args=[*call.args, cst.parse_expression(f"f({name}={code})").args[0]])


def _has_arg(call: cst.Call, keyword: str, position: int) -> bool:
    positional = [a for a in call.args if a.keyword is None and not a.star]
    return len(positional) > position or any(a.keyword and a.keyword.value == keyword for a in call.args)


def _without_arg(call: cst.Call, keyword: str, position: int) -> cst.Call:
    """The call without the argument given by keyword or at that position (and no dangling comma)."""
    args = [a for i, a in enumerate(call.args)
            if not (a.keyword and a.keyword.value == keyword) and not (a.keyword is None and i == position)]
    if len(args) < len(call.args) and args:
        args[-1] = args[-1].with_changes(comma=cst.MaybeSentinel.DEFAULT)
    return call.with_changes(args=args)


def _add_param(fn: cst.FunctionDef, name: str) -> cst.FunctionDef:
    """`def f(self, x)` -> `def f(self, x, name=None)`."""
    param = cst.parse_statement(f"def f({name}=None): pass").params.params[0]
    return fn.with_changes(params=fn.params.with_changes(params=[*fn.params.params, param]))


def _has_param(fn: cst.FunctionDef, name: str) -> bool:
    return any(p.name.value == name for p in fn.params.params)


class _ReturnAlso(cst.CSTTransformer):
    """Every `return value` of one function (not of functions nested in it) returns `value, name`."""

    def __init__(self, root: cst.FunctionDef, name: str) -> None:
        self.root, self.name = root, name

    def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
        return node is self.root

    def leave_Return(self, original_node: cst.Return, updated_node: cst.Return) -> cst.Return:
        value = updated_node.value
        if isinstance(value, cst.Tuple) and not value.lpar:
            value = value.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])
        pair = cst.Tuple([cst.Element(value), cst.Element(cst.Name(self.name))], lpar=[], rpar=[])
        return updated_node.with_changes(value=pair)


def _return_also(fn: cst.FunctionDef, name: str) -> cst.FunctionDef:
    return fn.visit(_ReturnAlso(fn, name))


class _CallRewriter(cst.CSTTransformer):
    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = rules

    def leave_Call(self, original_node: cst.Call, updated_node: cst.Call) -> cst.BaseExpression:
        for matcher, rewrite in self.rules:
            if m.matches(updated_node, matcher):
                return rewrite(updated_node)
        return updated_node


def _rewrite_calls(module: cst.Module, rules: Sequence[Rule]) -> cst.Module | None:
    """Each call matching a rule's matcher rewritten by it; None when nothing changed."""
    new = module.visit(_CallRewriter(rules))
    return None if new.deep_equals(module) else new


def _functional(module: cst.Module) -> tuple[cst.Module, str]:
    """The file's alias of torch.nn.functional; `import torch.nn.functional as F` added when it has none."""
    torch_nn = m.Attribute(value=m.Name("torch"), attr=m.Name("nn"))
    aliased = m.AsName(name=m.Name())
    functional = m.Attribute(value=torch_nn, attr=m.Name("functional"))
    imports = (m.Import(names=[m.ImportAlias(name=functional, asname=aliased)])
               | m.ImportFrom(module=torch_nn, names=[m.ImportAlias(name=m.Name("functional"), asname=aliased)]))
    for statement in module.body:
        if m.matches(statement, m.SimpleStatementLine(body=[imports])):
            return module, statement.body[0].names[0].asname.name.value
    return _cst.ensure_import(module, "import torch.nn.functional as F"), "F"


# ---------------------------------------------------------------- locating the model's parts
@dataclass(frozen=True)
class _Attention:
    cls: str
    method: str
    q: str
    k: str
    v: str


def _attention(module: cst.Module) -> _Attention:
    """The first class method calling `F.scaled_dot_product_attention(q, k, v, ...)` on plain names."""
    for cls in _cst.classes_containing(module, _SDPA):
        for fn in _cst.methods(cls):
            for call in m.findall(fn, _SDPA):
                if len(call.args) >= 3 and all(m.matches(a, m.Arg(m.Name(), keyword=None)) for a in call.args[:3]):
                    return _Attention(cls.name.value, fn.name.value, *(a.value.value for a in call.args[:3]))
    raise NotApplicable("no F.scaled_dot_product_attention(q, k, v, ...) call on plain names inside a class")


def _edit_sdpa(module: cst.Module, att: _Attention, edit: Callable[[cst.FunctionDef, cst.SimpleStatementLine],
                                                                  cst.FunctionDef]) -> cst.Module:
    """Edit the attention method given the statement line of its SDPA call."""
    return _edit_method(module, att.cls, att.method, lambda fn: edit(fn, _lines_with(fn, _SDPA)[0]))


def _embedding(module: cst.Module, sized_by: re.Pattern[str], what: str) -> tuple[str, str]:
    """(class, path) of an nn.Embedding made in __init__ as `self.a = nn.Embedding(...)` (path "a") or as
    a keyword of a container, `self.a = nn.ModuleDict(dict(b=nn.Embedding(...)))` (path "a.b")."""
    target = m.AssignTarget(m.Attribute(value=m.Name("self")))
    for cls in _cst.classes_containing(module, _embedding_call(sized_by)):
        for assign in m.findall(_method(cls, "__init__") or cls, m.Assign(targets=[target])):
            attr = assign.targets[0].target.attr.value
            if m.matches(assign.value, _embedding_call(sized_by)):
                return cls.name.value, attr
            for arg in m.findall(assign.value, m.Arg(keyword=m.Name(), value=_embedding_call(sized_by))):
                return cls.name.value, f"{attr}.{arg.keyword.value}"
    raise NotApplicable(f"no {what} created in a class's __init__")


def _token_embedding(module: cst.Module) -> tuple[str, str, str]:
    """(class, path, method) of the token embedding nn.Embedding(vocab, d) and the method looking it up."""
    cls_name, path = _embedding(module, _TOKENS, "token embedding nn.Embedding(vocab_size, d)")
    return cls_name, path, _method_calling(_class(module, cls_name), path)


def _method_calling(cls: cst.ClassDef, path: str) -> str:
    for fn in _cst.methods(cls):
        if fn.name.value != "__init__" and _cst.contains(fn, m.Call(func=_self_attr(path))):
            return fn.name.value
    raise NotApplicable(f"{cls.name.value} never calls self.{path}(...)")


def _block(module: cst.Module, attn_cls: str) -> tuple[str, str, str]:
    """(class, method, attribute) of the block that creates `self.<attr> = <attn_cls>(...)` and calls it."""
    created = m.Assign(targets=[m.AssignTarget(m.Attribute(value=m.Name("self")))], value=m.Call(func=m.Name(attn_cls)))
    for cls in _cst.classes_containing(module, created):
        for assign in m.findall(cls, created):
            attr = assign.targets[0].target.attr.value
            for fn in _cst.methods(cls):
                if fn.name.value != "__init__" and _cst.contains(fn, m.Call(func=_self_attr(attr))):
                    return cls.name.value, fn.name.value, attr
    raise NotApplicable(f"no block class that creates `self.<attr> = {attn_cls}(...)` and calls self.<attr>(...)")


def _loop_in(fn: cst.FunctionDef) -> tuple[cst.For, cst.SimpleStatementLine] | None:
    """`for block in self.<blocks>:` and its `x = block(x)` line."""
    for loop in m.findall(fn, m.For(target=m.Name(), iter=m.Attribute())):
        var = loop.target.value
        step = m.Assign(targets=[m.AssignTarget(m.Name())], value=m.Call(func=m.Name(var), args=[m.Arg(m.Name())]))
        for line in loop.body.body:
            if m.matches(line, m.SimpleStatementLine(body=[step])):
                assign = line.body[0]
                if assign.targets[0].target.value == assign.value.args[0].value.value:
                    return loop, line
    return None


def _block_loop(module: cst.Module) -> tuple[str, str]:
    """(class, method) holding the loop `for block in self.<blocks>: x = block(x)`."""
    for cls in (s for s in module.body if isinstance(s, cst.ClassDef)):
        for fn in _cst.methods(cls):
            if _loop_in(fn):
                return cls.name.value, fn.name.value
    raise NotApplicable("no loop `for block in self.<blocks>: x = block(x)` in a class method")


@dataclass(frozen=True)
class _Plumbing:
    """Where per-layer values must travel: attention <- block <- the model's loop over blocks."""
    attn: _Attention
    block: str
    block_method: str
    attn_attr: str
    model: str
    loop_method: str


def _plumbing(module: cst.Module) -> _Plumbing:
    attn = _attention(module)
    return _Plumbing(attn, *_block(module, attn.cls), *_block_loop(module))


def _thread_block(fn: cst.FunctionDef, attn_attr: str, name: str) -> cst.FunctionDef:
    """The block method takes `name=None` and passes it on to its attention call as `name=name`."""
    fn = _add_param(fn, name)
    call = m.findall(fn, m.Call(func=_self_attr(attn_attr)))[0]
    return fn.deep_replace(call, _with_kwarg(call, name, name))


# ---------------------------------------------------------------- norm
class RMSNorm(Move):
    name = "rmsnorm"
    conflicts_with = ("drop_linear_biases",)  # both rewrite each nn.LayerNorm(...) line
    category = "norm"
    description = "LayerNorm -> RMSNorm, modules and F.layer_norm (Zhang & Sennrich 2019; LLaMA)"

    def transform(self, module: cst.Module) -> cst.Module:
        def rename(call: cst.Call, to: str) -> cst.Call:
            # the bias is argument 3 of both nn.LayerNorm(shape, eps, affine, bias) and F.layer_norm(x, shape, w, b)
            return _without_arg(call, "bias", 3).with_changes(func=call.func.with_changes(attr=cst.Name(to)))

        new = _rewrite_calls(module, [(_nn_call("LayerNorm"), lambda call: rename(call, "RMSNorm")),
                                      (_fn_call("layer_norm"), lambda call: rename(call, "rms_norm"))])
        if new is None:
            if _cst.contains(module, _nn_call("RMSNorm") | _fn_call("rms_norm")):
                raise NotApplicable("already uses RMSNorm: no LayerNorm left")
            raise NotApplicable("no nn.LayerNorm(...) or F.layer_norm(...) call")
        return new


class DropLinearBiases(Move):
    name = "drop_linear_biases"
    conflicts_with = ("swiglu",)  # both rewrite the up-projection nn.Linear line
    category = "norm"
    description = "bias=False on nn.Linear and nn.LayerNorm layers that do not set it (PaLM; modded-nanogpt)"

    def transform(self, module: cst.Module) -> cst.Module:
        def no_bias(position: int) -> Callable[[cst.Call], cst.Call]:
            return lambda call: call if _has_arg(call, "bias", position) else _with_kwarg(call, "bias", "False")

        new = _rewrite_calls(module, [(_nn_call("Linear"), no_bias(2)), (_nn_call("LayerNorm"), no_bias(3))])
        if new is None:
            raise NotApplicable("no nn.Linear/nn.LayerNorm without a bias argument: already dropped or set")
        return new


class EmbedNorm(Move):
    name = "embed_norm"
    category = "norm"
    description = "RMS-normalise the residual stream right after the token embedding (modded-nanogpt)"

    def transform(self, module: cst.Module) -> cst.Module:
        model, path, method = _token_embedding(module)
        module, F = _functional(module)

        def edit(fn: cst.FunctionDef) -> cst.FunctionDef:
            body = list(fn.body.body)
            at = next((i for i, s in enumerate(body) if _cst.contains(s, m.Call(func=_self_attr(path)))), None)
            name = _cst.assigned_name(body[at]) if at is not None else None
            if name is None:
                raise NotApplicable(f"the lookup self.{path}(...) is not assigned to a name in {model}.{method}")
            if at + 1 < len(body) and _cst.contains(body[at + 1], _fn_call("rms_norm", m.Name(name))):
                raise NotApplicable(f"already normalises {name} after the embedding")
            return _insert(fn, body[at], f"{name} = {F}.rms_norm({name}, ({name}.size(-1),))", after=True)

        return _edit_method(module, model, method, edit)


# ---------------------------------------------------------------- mlp
_RELU_SQUARED = '''
class ReLUSquared(torch.nn.Module):
    """relu(x)^2 (Primer, So et al. 2021)."""

    def forward(self, x):
        return torch.relu(x).square()
'''


class ReLU2(Move):
    name = "relu2"
    conflicts_with = ("swiglu",)  # the same gelu call
    category = "mlp"
    description = "GELU -> ReLU squared (Primer, So et al. 2021; modded-nanogpt)"

    def transform(self, module: cst.Module) -> cst.Module:
        def squared(call: cst.Call) -> cst.BaseExpression:
            relu = call.with_changes(func=call.func.with_changes(attr=cst.Name("relu")),
                                     args=[call.args[0].with_changes(comma=cst.MaybeSentinel.DEFAULT)])
            return cst.Call(func=cst.Attribute(value=relu, attr=cst.Name("square")))

        new = _rewrite_calls(module, [(_fn_call("gelu"), squared),
                                      (_nn_call("GELU"), lambda _: cst.Call(func=cst.Name("ReLUSquared")))])
        if new is None:
            if _cst.defines(module, "ReLUSquared") or _cst.contains(module, m.Call(
                    func=m.Attribute(value=_fn_call("relu"), attr=m.Name("square")))):
                raise NotApplicable("already uses ReLU^2: no GELU left")
            raise NotApplicable("no F.gelu(...) call or nn.GELU() module")
        if _cst.contains(new, m.Call(func=m.Name("ReLUSquared"))) and not _cst.defines(new, "ReLUSquared"):
            new = _cst.insert_definitions(new, _RELU_SQUARED)
        return _cst.ensure_import(new, "import torch")


def _gelu_from_linear(cls: cst.ClassDef, fn: cst.FunctionDef) -> tuple[cst.Call, str] | None:
    """The GELU call of fn (F.gelu or an nn.GELU() attribute) whose input comes from an nn.Linear attribute,
    directly (`F.gelu(self.fc(x))`) or through a name (`h = self.fc(x)` ... `self.act(h)`), and that attribute."""
    def attrs(made_by: m.Call) -> set[str]:
        target = m.AssignTarget(m.Attribute(value=m.Name("self")))
        return {a.targets[0].target.attr.value for a in m.findall(cls, m.Assign(targets=[target], value=made_by))}

    linears, gelus = attrs(_nn_call("Linear")), attrs(_nn_call("GELU"))
    for call in m.findall(fn, m.Call(args=[m.Arg()])):
        if not (m.matches(call, _fn_call("gelu")) or any(m.matches(call.func, _self_attr(g)) for g in gelus)):
            continue
        source = call.args[0].value
        if isinstance(source, cst.Name):  # the name's last assignment before the GELU line
            lines = m.findall(fn, m.SimpleStatementLine())
            at = lines.index(_line_of(fn, call))
            assigned = [line.body[0].value for line in lines[:at] if _cst.assigned_name(line) == source.value]
            source = assigned[-1] if assigned else source
        for up in linears:
            if m.matches(source, m.Call(func=_self_attr(up))):
                return call, up
    return None


class SwiGLU(Move):
    name = "swiglu"
    category = "mlp"
    description = "GELU MLP -> SwiGLU gated MLP, up-projection doubled (Shazeer 2020 'GLU Variants'; LLaMA)"

    # The hidden width is kept, so the MLP has 1.5x its parameters: the MLP width knob (MLP_RATIO in the
    # baseline) can trade them back (LLaMA's parameter-matched choice is 2/3 of the GELU width).
    def transform(self, module: cst.Module) -> cst.Module:
        found = next(((cls, fn, hit) for cls in module.body if isinstance(cls, cst.ClassDef) for fn in _cst.methods(cls)
                      if (hit := _gelu_from_linear(cls, fn))), None)
        if found is None:
            if _cst.contains(module, _fn_call("silu")):
                raise NotApplicable("already gated: the MLP uses SiLU")
            raise NotApplicable("no MLP class whose forward applies GELU to an nn.Linear's output")
        cls, fn, (_, up) = found
        module, F = _functional(module)

        def gate(fn: cst.FunctionDef) -> cst.FunctionDef:
            act, _ = _gelu_from_linear(_class(module, cls.name.value), fn)
            line = _line_of(fn, act)
            split = _cst.statements(f"gate, up = {_cst.code(act.args[0].value)}.chunk(2, dim=-1)")
            gated = line.deep_replace(act, cst.parse_expression(f"{F}.silu(gate) * up"))
            return fn.deep_replace(line, cst.FlattenSentinel([*split, gated]))

        def widen(init: cst.FunctionDef) -> cst.FunctionDef:
            made = m.Assign(targets=[m.AssignTarget(_self_attr(up))], value=_nn_call("Linear"))
            call = m.findall(init, made)[0].value
            out = next(a for i, a in enumerate(call.args)
                       if (a.keyword and a.keyword.value == "out_features") or (i == 1 and a.keyword is None))
            tight = isinstance(out.value, (cst.Name, cst.Attribute, cst.Integer, cst.Call)) or m.matches(
                out.value, m.BinaryOperation(operator=m.Multiply()))
            doubled = cst.parse_expression(f"2 * {_cst.code(out.value)}" if tight else f"2 * ({_cst.code(out.value)})")
            return init.deep_replace(out, out.with_changes(value=doubled))

        module = _edit_method(module, cls.name.value, fn.name.value, gate)
        return _edit_method(module, cls.name.value, "__init__", widen)


# ---------------------------------------------------------------- attention
_APPLY_ROTARY = '''
def apply_rotary(x):
    """Rotate channel pairs (i, i + D/2) of x (B, H, T, D) by position-dependent angles (RoPE, Su et al. 2021)."""
    T, D = x.shape[-2], x.shape[-1]
    inv_freq = ROPE_BASE ** -(torch.arange(0, D // 2, device=x.device, dtype=torch.float32) / (D // 2))
    angles = torch.outer(torch.arange(T, device=x.device, dtype=torch.float32), inv_freq)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., : D // 2], x[..., D // 2 :]
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
'''


def _drop_term(fn: cst.FunctionDef, term: m.BaseMatcherNode) -> cst.FunctionDef | None:
    """fn with the first sum `a + <term>` or `<term> + a` reduced to `a`; None when there is none."""
    for op in m.findall(fn, m.BinaryOperation(operator=m.Add())):
        for drop, keep in ((op.right, op.left), (op.left, op.right)):
            if m.matches(drop, term):
                return fn.deep_replace(op, keep.with_changes(lpar=[*op.lpar, *keep.lpar], rpar=[*keep.rpar, *op.rpar]))
    return None


def _drop_unused(fn: cst.FunctionDef, name: str) -> cst.FunctionDef:
    """fn without its `name = ...` lines when name is no longer read."""
    lines = [s for s in fn.body.body if _cst.assigned_name(s) == name]
    if lines and len(m.findall(fn, m.Name(name))) == len(lines):
        for line in lines:
            fn = fn.deep_remove(next(s for s in fn.body.body if s.deep_equals(line)))
    return fn


def _drop_position_lookup(fn: cst.FunctionDef, path: str) -> cst.FunctionDef:
    """Remove `+ self.<path>(positions)` (or `+ pos_emb` after `pos_emb = self.<path>(positions)`) and the
    positions' own line once nothing else reads it."""
    lookup = m.Call(func=_self_attr(path))
    inputs = [a.value.value for a in m.findall(fn, lookup)[0].args if isinstance(a.value, cst.Name)]
    new = _drop_term(fn, lookup)
    if new is None:
        line = next((s for s in fn.body.body if _cst.assigned_name(s) and m.matches(s.body[0].value, lookup)), None)
        new = line and _drop_term(fn.deep_remove(line), m.Name(_cst.assigned_name(line)))
    if new is None:
        raise NotApplicable(f"the position lookup self.{path}(...) is not added to the token embedding with +")
    for name in inputs:
        new = _drop_unused(new, name)
    return new


def _drop_position_embedding(init: cst.FunctionDef, path: str) -> cst.FunctionDef:
    attr, _, key = path.partition(".")
    owner = m.Assign(targets=[m.AssignTarget(_self_attr(attr))])
    if not key:
        return init.deep_remove(next(s for s in m.findall(init, m.SimpleStatementLine(body=[owner]))))
    arg = m.findall(m.findall(init, owner)[0], m.Arg(keyword=m.Name(key)))[0]
    return init.deep_remove(arg)


class RoPE(Move):
    name = "rope"
    category = "attention"
    description = "rotary position embeddings on q and k replace learned positions (RoFormer, Su et al. 2021)"
    knobs = ("ROPE_BASE",)

    def transform(self, module: cst.Module) -> cst.Module:
        if _cst.defines(module, "apply_rotary"):
            raise NotApplicable("already rotary: apply_rotary is defined")
        att = _attention(module)
        model, path = _embedding(module, _POSITIONS, "learned position embedding nn.Embedding(seq_len, d)")
        method = _method_calling(_class(module, model), path)
        uses = [fn.name.value for fn in _cst.methods(_class(module, model))
                if fn.name.value != "__init__" and _cst.contains(fn, _self_attr(path))]
        if uses != [method] or len(m.findall(_class(module, model), m.Call(func=_self_attr(path)))) != 1:
            raise NotApplicable(f"self.{path} is used beyond one lookup (in {', '.join(uses)}): "
                                "remove those uses first")
        module = _edit_method(module, model, method, lambda fn: _drop_position_lookup(fn, path))
        module = _edit_method(module, model, "__init__", lambda init: _drop_position_embedding(init, path))
        module = _cst.add_constants(module, [("ROPE_BASE", "10000", "rotary frequency base (Su et al. 2021); "
                                              "knob: log[1000, 1000000]")])
        module = _cst.insert_definitions(_cst.ensure_import(module, "import torch"), _APPLY_ROTARY)
        rotate = f"{att.q}, {att.k} = apply_rotary({att.q}), apply_rotary({att.k})"
        return _edit_sdpa(module, att, lambda fn, line: _insert(fn, line, rotate))


def _qk_normed(att: _Attention) -> m.BaseMatcherNode:
    return _fn_call("rms_norm", m.Name(att.q))


class QKNorm(Move):
    name = "qk_norm"
    category = "attention"
    description = "RMS-normalise q and k per head before attention (Henry et al. 2020; Dehghani et al. 2023)"

    def transform(self, module: cst.Module) -> cst.Module:
        att = _attention(module)
        if _cst.contains(_method(_class(module, att.cls), att.method), _qk_normed(att)):
            raise NotApplicable(f"already normalises {att.q} and {att.k}")
        module, F = _functional(module)
        q, k = att.q, att.k
        line = f"{q}, {k} = {F}.rms_norm({q}, ({q}.size(-1),)), {F}.rms_norm({k}, ({k}.size(-1),))"
        # Norm first, then rotate (modded-nanogpt): go before rope's line when it is there.
        return _edit_sdpa(module, att, lambda fn, sdpa: _insert(fn, (_lines_with(fn, _ROTARY) or [sdpa])[0], line))


class AttnTemperature(Move):
    name = "attn_temperature"
    requires = ("qk_norm",)
    category = "attention"
    description = "fixed attention logit scale for QK-normed heads (Henry et al. 2020's g; modded-nanogpt 0.12)"
    knobs = ("ATTN_SCALE",)

    # With unit-RMS q and k, q.k = head_dim * cos(angle): the logit range grows with head_dim and no longer
    # with the activations, so the scale is ATTN_SCALE / head_dim, ATTN_SCALE being the logit of two aligned
    # heads. 15 matches modded-nanogpt's 0.12 at head dim 128 and Henry et al.'s g = log2(T^2 - T) ~ 14-20;
    # SDPA's default 1/sqrt(head_dim) gives only sqrt(head_dim) (5.7 at the CPU baseline's 32): too cold.
    def transform(self, module: cst.Module) -> cst.Module:
        att = _attention(module)
        fn = _method(_class(module, att.cls), att.method)
        if any(_has_arg(call, "scale", 6) for call in m.findall(fn, _SDPA)):
            raise NotApplicable("already sets the attention scale")
        if not _cst.contains(fn, _qk_normed(att)):
            raise NotApplicable(f"needs qk_norm first: no rms_norm of {att.q} and {att.k} before attention")
        module = _cst.add_constants(module, [("ATTN_SCALE", "15.0", "attention logit of aligned unit-RMS q, k; "
                                              "scale = ATTN_SCALE / head_dim; knob: log[3, 60]")])

        def scale(fn: cst.FunctionDef, line: cst.SimpleStatementLine) -> cst.FunctionDef:
            call = m.findall(line, _SDPA)[0]
            return fn.deep_replace(call, _with_kwarg(call, "scale", f"ATTN_SCALE / {att.q}.size(-1)"))

        return _edit_sdpa(module, att, scale)


class ValueResidual(Move):
    name = "value_residual"
    conflicts_with = ("value_embeddings", "x0_shortcut")  # attention signature, block and block loop
    category = "attention"
    description = "mix the first layer's values into every layer's, learned weight (Zhou et al. 2024 ResFormer)"

    def transform(self, module: cst.Module) -> cst.Module:
        att = _attention(module)
        if _has_param(_method(_class(module, att.cls), att.method), "v1"):
            raise NotApplicable("already has a value residual: attention takes v1")
        p = _plumbing(module)
        v = p.attn.v
        mix = f"""
            if v1 is None:
                v1 = {v}
            {v} = self.value_mix * {v} + (1 - self.value_mix) * v1  # value residual (Zhou et al. 2024)
        """
        module = _edit_method(_cst.ensure_import(module, "import torch"), p.attn.cls, "__init__",
                              lambda fn: _append(fn, "self.value_mix = torch.nn.Parameter(torch.tensor(0.5))"))
        module = _edit_sdpa(module, p.attn,
                            lambda fn, line: _return_also(_insert(_add_param(fn, "v1"), line, mix), "v1"))

        def block(fn: cst.FunctionDef) -> cst.FunctionDef:
            fn = _thread_block(fn, p.attn_attr, "v1")
            line = _lines_with(fn, m.Call(func=_self_attr(p.attn_attr)))[0]
            call = m.findall(line, m.Call(func=_self_attr(p.attn_attr)))[0]
            hoisted = _cst.statements(f"attn_out, v1 = {_cst.code(call)}")
            fn = fn.deep_replace(line, cst.FlattenSentinel([*hoisted, line.deep_replace(call, cst.Name("attn_out"))]))
            return _return_also(fn, "v1")

        def loop(fn: cst.FunctionDef) -> cst.FunctionDef:
            fn = _insert(fn, _loop_in(fn)[0], "v1 = None")
            _, line = _loop_in(fn)
            x, call = _cst.assigned_name(line), line.body[0].value
            return fn.deep_replace(line, _cst.statements(f"{x}, v1 = {_cst.code(_with_kwarg(call, 'v1', 'v1'))}")[0])

        module = _edit_method(module, p.block, p.block_method, block)
        return _edit_method(module, p.model, p.loop_method, loop)


class ValueEmbeddings(Move):
    name = "value_embeddings"
    conflicts_with = ("x0_shortcut",)  # both rewrite the loop over blocks
    category = "attention"
    description = "token-indexed value embeddings added to v in the first and last layers (modded-nanogpt)"
    knobs = ("VALUE_EMBED_LAYERS",)

    def transform(self, module: cst.Module) -> cst.Module:
        if _cst.contains(module, _self_attr("value_embeds")):
            raise NotApplicable("already has value embeddings: self.value_embeds exists")
        p = _plumbing(module)
        model, path, method = _token_embedding(module)
        if (p.model, p.loop_method) != (model, method):
            raise NotApplicable(f"the loop over blocks is not in {model}.{method}, where the tokens are embedded")
        v = p.attn.v
        add = f"""
            if ve is not None:  # value embeddings (modded-nanogpt)
                {v} = {v} + ve.unflatten(-1, ({v}.size(1), {v}.size(-1))).transpose(1, 2)
        """
        module = _cst.add_constants(module, [("VALUE_EMBED_LAYERS", "2", "value embedding tables, each used by "
                                              "one of the first and one of the last layers; knob: int[1, 4]")])
        module = _edit_sdpa(module, p.attn, lambda fn, line: _insert(_add_param(fn, "ve"), line, add))
        module = _edit_method(module, p.block, p.block_method, lambda fn: _thread_block(fn, p.attn_attr, "ve"))

        def tables(init: cst.FunctionDef) -> cst.FunctionDef:
            line = _lines_with(init, _embedding_call(_TOKENS))[0]
            embedding = m.findall(line, _embedding_call(_TOKENS))[0]
            code = (f"self.value_embeds = {_cst.code(embedding.func.value)}.ModuleList("
                    f"{_cst.code(embedding)} for _ in range(VALUE_EMBED_LAYERS))")
            return _insert(init, line, code, after=True)

        def lookups(fn: cst.FunctionDef) -> cst.FunctionDef:
            tokens = _cst.code(m.findall(fn, m.Call(func=_self_attr(path)))[0].args[0].value)
            blocks = _cst.code(_loop_in(fn)[0].iter)
            fn = _insert(fn, _loop_in(fn)[0], f"""
                value_embeds = [table({tokens}) for table in self.value_embeds]
                value_embeds = value_embeds + [None] * (len({blocks}) - 2 * len(value_embeds)) + value_embeds
            """)
            for_loop, line = _loop_in(fn)
            call = line.body[0].value
            return fn.deep_replace(for_loop, for_loop.deep_replace(call, _with_kwarg(call, "ve", "ve")).with_changes(
                target=cst.parse_expression(f"{for_loop.target.value}, ve"),
                iter=cst.parse_expression(f"zip({blocks}, value_embeds)")))

        module = _edit_method(module, model, "__init__", tables)
        return _edit_method(module, model, method, lookups)


MOVES = [RMSNorm, DropLinearBiases, EmbedNorm, ReLU2, SwiGLU, RoPE, QKNorm, AttnTemperature, ValueResidual,
         ValueEmbeddings]
