"""Embedding and output moves: untied zero-init head, zero-init projections, logit soft-cap, the x0
shortcut, token smearing and a hashed bigram embedding.

Each move finds its pieces by pattern: the model class is the one that builds the token
`nn.Embedding(vocab_size, dim)` (as `self.wte = ...` or nanoGPT's `wte=...` inside a ModuleDict), its
forward path is the method that calls that embedding, and its block loop is
`for block in self.<blocks>: x = block(x, ...)`. New parameters go at the end of the model's
`__init__`, after any init loop, so `self.apply(self._init_weights)` cannot overwrite them.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import libcst as cst
import libcst.matchers as m

from mutations.catalog import _cst
from mutations.catalog._base import Move, NotApplicable

# The Linear that writes back into the residual stream: baseline, nanoGPT, LLaMA (HF and Meta) names.
_RESIDUAL_PROJECTIONS = frozenset({"proj", "c_proj", "o_proj", "out_proj", "down_proj", "wo", "w2"})

_ASSIGN_TO_NAME = m.SimpleStatementLine(body=[m.Assign(targets=[m.AssignTarget(target=m.Name())])])
_TIE = m.SimpleStatementLine(body=[m.Assign(targets=[m.AssignTarget(target=m.Attribute(attr=m.Name("weight")))],
                                            value=m.Attribute(attr=m.Name("weight")))])
_BLOCKS_LOOP = m.For(target=m.Name(), iter=m.Attribute(), body=m.IndentedBlock(body=[m.SimpleStatementLine(body=[
    m.Assign(targets=[m.AssignTarget(target=m.Name())],
             value=m.Call(func=m.Name(), args=[m.Arg(keyword=None, star=""), m.ZeroOrMore()]))])]))
_LIGER = "LigerFusedLinearCrossEntropyLoss"
_LIGER_LOSS = m.Call(func=m.Name(_LIGER) | m.Attribute(attr=m.Name(_LIGER)))
_HAS_SOFTCAP = m.Call(args=[m.ZeroOrMore(), m.Arg(keyword=m.Name("softcap")), m.ZeroOrMore()])
_ZEROING_LOOP = m.For(iter=m.Call(func=m.Attribute(value=m.Name("self"), attr=m.Name("named_modules"))),
                      body=m.MatchIfTrue(lambda body: _cst.contains(body, m.Attribute(attr=m.Name("zeros_")))))


def _importing(alias: m.ImportAlias) -> m.Import:
    return m.Import(names=[m.ZeroOrMore(), alias, m.ZeroOrMore()])


_IMPORTS_TORCH = _importing(m.ImportAlias(name=m.Name("torch"), asname=None))
_TORCH_NN = m.Attribute(value=m.Name("torch"), attr=m.Name("nn"))
_BINDS_NN = (_importing(m.ImportAlias(name=_TORCH_NN, asname=m.AsName(m.Name("nn"))))
             | m.ImportFrom(module=m.Name("torch"), names=[m.ZeroOrMore(), m.ImportAlias(m.Name("nn"), asname=None),
                                                           m.ZeroOrMore()]))


# ---------------------------------------------------------------- finding the model


def _argument(call: cst.Call, position: int, keyword: str) -> cst.BaseExpression | None:
    """A constructor argument given by position or by keyword."""
    for arg in call.args:
        if arg.keyword is not None and arg.keyword.value == keyword:
            return arg.value
    positional = [arg.value for arg in call.args if arg.keyword is None and not arg.star]
    return positional[position] if position < len(positional) else None


def _is_vocab(value: cst.BaseExpression | None) -> bool:
    return value is not None and "vocab" in _cst.code(value).lower()


def _built_modules(node: cst.CSTNode, kind: str) -> dict[str, cst.Call]:
    """Attribute name -> constructor for `self.X = nn.<kind>(...)` and `X=nn.<kind>(...)` (ModuleDict)."""
    constructor = m.Call(func=m.Attribute(attr=m.Name(kind)) | m.Name(kind))
    built = {a.targets[0].target.attr.value: a.value for a in m.findall(
        node, m.Assign(targets=[m.AssignTarget(target=m.Attribute(value=m.Name("self")))], value=constructor))}
    built.update({a.keyword.value: a.value for a in m.findall(node, m.Arg(keyword=m.Name(), value=constructor))})
    return built


def _vocab_heads(node: cst.CSTNode) -> set[str]:
    linears = _built_modules(node, "Linear")
    return {name for name, call in linears.items() if _is_vocab(_argument(call, 1, "out_features"))}


@dataclass(frozen=True)
class _Model:
    cls: cst.ClassDef
    embedding: str                       # attribute name of the token embedding
    width: cst.BaseExpression | None     # its embedding_dim argument


def _model(module: cst.Module) -> _Model:
    for cls in _classes(module):
        for name, call in _built_modules(cls, "Embedding").items():
            if _is_vocab(_argument(call, 0, "num_embeddings")):
                return _Model(cls, name, _argument(call, 1, "embedding_dim"))
    raise NotApplicable("no class builds a token embedding nn.Embedding(vocab_size, dim)")


def _classes(module: cst.Module) -> list[cst.ClassDef]:
    return [s for s in module.body if isinstance(s, cst.ClassDef)]


def _uses(cls: cst.ClassDef, attribute: str) -> bool:
    return _cst.contains(cls, m.Attribute(value=m.Name("self"), attr=m.Name(attribute)))




def _find_statement(cls: cst.ClassDef, found: Callable[[cst.CSTNode], bool]) -> tuple[cst.FunctionDef, int] | None:
    """The first method with a top-level statement that is found, and that statement's index."""
    for method in _cst.methods(cls):
        for i, statement in enumerate(method.body.body):
            if found(statement):
                return method, i
    return None


@dataclass(frozen=True)
class _EmbeddingSite:
    method: cst.FunctionDef
    at: int          # index of `x = ...self.<embedding>(idx)...` in the method's body
    variable: str    # x
    tokens: str      # idx


def _embedding_site(model: _Model) -> _EmbeddingSite:
    """The forward-path statement that calls the token embedding and assigns the result to a variable."""
    call = m.Call(func=m.Attribute(attr=m.Name(model.embedding)), args=[m.Arg(keyword=None), m.ZeroOrMore()])

    def calls_embedding(statement: cst.CSTNode) -> bool:
        return isinstance(statement, cst.SimpleStatementLine) and _cst.contains(statement, call)

    if (found := _find_statement(model.cls, calls_embedding)) is None:
        raise NotApplicable(f"no statement of {model.cls.name.value} calls self.{model.embedding}(idx)")
    method, at = found
    statement = method.body.body[at]
    if not m.matches(statement, _ASSIGN_TO_NAME):
        where = f"{model.cls.name.value}.{method.name.value}"
        raise NotApplicable(f"{where} does not assign the token embedding to a variable")
    tokens = _cst.code(m.findall(statement, call)[0].args[0].value)
    return _EmbeddingSite(method, at, statement.body[0].targets[0].target.value, tokens)


# ---------------------------------------------------------------- editing the model
def _splice(function: cst.FunctionDef, at: int, end: int, new: Sequence[cst.BaseStatement]) -> cst.FunctionDef:
    """The function with body statements [at, end) replaced by `new`."""
    body = list(function.body.body)
    return function.with_changes(body=function.body.with_changes(body=[*body[:at], *new, *body[end:]]))


def _insert(function: cst.FunctionDef, at: int, code: str) -> cst.FunctionDef:
    return _splice(function, at, at, _cst.statements(code))


def _with_method(cls: cst.ClassDef, new: cst.FunctionDef) -> cst.ClassDef:
    body = [new if isinstance(s, cst.FunctionDef) and s.name.value == new.name.value else s for s in cls.body.body]
    return cls.with_changes(body=cls.body.with_changes(body=body))


def _append_to_init(cls: cst.ClassDef, code: str) -> cst.ClassDef:
    """Statements at the end of `__init__`, after any init loop or `self.apply(...)`."""
    init = next((f for f in _cst.methods(cls) if f.name.value == "__init__"), None)
    if init is None:
        raise NotApplicable(f"class {cls.name.value} has no __init__ to build the new parameters in")
    return _with_method(cls, _insert(init, len(init.body.body), code))


def _nn(module: cst.Module) -> str:
    """How the file spells torch.nn."""
    return "nn" if _cst.contains(module, _BINDS_NN) else "torch.nn"


def _with_torch(module: cst.Module) -> cst.Module:
    return module if _cst.contains(module, _IMPORTS_TORCH) else _cst.ensure_import(module, "import torch")


def _replace(module: cst.Module, old: cst.ClassDef, new: cst.ClassDef) -> cst.Module:
    return _with_torch(_cst.replace_class(module, old.name.value, new))


# ---------------------------------------------------------------- moves
class UntiedHead(Move):
    name = "untied_head"
    category = "output"
    description = ("untie the output head from the token embedding and zero-initialise it "
                   "(untied: PaLM, Chowdhery et al. 2022; zero head: modded-nanogpt)")

    def transform(self, module: cst.Module) -> cst.Module:
        linears = _built_modules(module, "Linear")

        def tied(statement: cst.CSTNode) -> bool:
            return m.matches(statement, _TIE) and _head_side(statement.body[0], linears) is not None

        for cls in _classes(module):
            if (found := _find_statement(cls, tied)) is not None:
                method, at = found
                head = _head_side(method.body.body[at].body[0], linears)
                untied = _splice(method, at, at + 1, [])
                untied = _insert(untied, len(untied.body.body),
                                 f"{_nn(module)}.init.zeros_({head})  # untied head starts at zero (modded-nanogpt)")
                return _replace(module, cls, _with_method(cls, untied))
        tie = "self.<head>.weight = self.<embedding>.weight"
        raise NotApplicable(f"no tied output head `{tie}`: already untied, or never tied")


def _head_side(tie: cst.Assign, linears: dict[str, cst.Call]) -> str | None:
    """The code of the tied `<...>.weight` that belongs to an nn.Linear (the head), or None."""
    for side in (tie.targets[0].target, tie.value):
        owner = side.value.attr.value if isinstance(side.value, cst.Attribute) else _cst.code(side.value)
        if owner in linears:
            return _cst.code(side)
    return None


class ZeroInitProj(Move):
    name = "zero_init_proj"
    category = "init"
    description = ("zero-initialise the attention and MLP output projections so every block starts as the "
                   "identity (Fixup, Zhang et al. 2019; modded-nanogpt)")

    def transform(self, module: cst.Module) -> cst.Module:
        model = _model(module)
        names = sorted(_RESIDUAL_PROJECTIONS & _built_modules(module, "Linear").keys())
        if not names:
            known = ", ".join(sorted(_RESIDUAL_PROJECTIONS))
            raise NotApplicable(f"no residual output projection: no nn.Linear named {known}")
        if _cst.contains(model.cls, _ZEROING_LOOP):
            raise NotApplicable(f"already zero-initialised: {model.cls.name.value}.__init__ zeroes named modules")
        suffixes = ", ".join(f'".{name}"' for name in names)
        suffixes = suffixes if len(names) == 1 else f"({suffixes})"
        code = f"""
            for name, layer in self.named_modules():  # residual projections start at zero: blocks start as the identity
                if name.endswith({suffixes}):
                    {_nn(module)}.init.zeros_(layer.weight)
        """
        return _replace(module, model.cls, _append_to_init(model.cls, code))


class LogitSoftcap(Move):
    name = "logit_softcap"
    category = "output"
    description = ("tanh soft-cap of the output logits, LOGIT_SOFTCAP * tanh(logits / LOGIT_SOFTCAP) (Gemma 2, "
                   "Team 2024; modded-nanogpt); liger's fused loss gets softcap=; other fused losses bypass it")
    knobs = ("LOGIT_SOFTCAP",)

    def transform(self, module: cst.Module) -> cst.Module:
        if _cst.constant_value(module, "LOGIT_SOFTCAP") is not None:
            raise NotApplicable("already soft-capped: LOGIT_SOFTCAP is defined")
        heads = _vocab_heads(module)
        if not heads:
            raise NotApplicable("no output head nn.Linear(dim, vocab_size)")
        capping = _CapLogits(heads)
        capped = module.visit(capping)
        if not capping.capped:
            raise NotApplicable("no `return self.<head>(...)` or `logits = self.<head>(...)` for the output head")
        capped = capped.visit(_CapFusedLoss())
        return _with_torch(_cst.add_constants(capped, [(
            "LOGIT_SOFTCAP", "15.0", "tanh cap on the logits (Gemma 2: 30, modded-nanogpt: 15); knob: log[5, 60]",
        )]))


def _capped(logits: str) -> str:
    return f"LOGIT_SOFTCAP * torch.tanh({logits} / LOGIT_SOFTCAP)"


class _CapLogits(cst.CSTTransformer):
    """`return self.<head>(...)` returns the capped logits; `logits = self.<head>(...)` is followed by the cap."""

    def __init__(self, heads: set[str]) -> None:
        super().__init__()
        self.head_call = m.Call(func=m.Attribute(value=m.Name("self"), attr=m.OneOf(*map(m.Name, sorted(heads)))))
        self.capped = 0

    def leave_Return(self, original_node: cst.Return, updated_node: cst.Return) -> cst.Return:
        if updated_node.value is None or not m.matches(updated_node.value, self.head_call):
            return updated_node
        self.capped += 1
        return updated_node.with_changes(value=_cst.expr(_capped(_cst.code(updated_node.value))))

    def leave_IndentedBlock(self, original_node: cst.IndentedBlock,
                            updated_node: cst.IndentedBlock) -> cst.IndentedBlock:
        body: list[cst.BaseStatement] = []
        for statement in updated_node.body:
            body.append(statement)
            if m.matches(statement, _ASSIGN_TO_NAME) and m.matches(statement.body[0].value, self.head_call):
                self.capped += 1
                logits = statement.body[0].targets[0].target.value
                body += _cst.statements(f"{logits} = {_capped(logits)}  # soft-cap (Gemma 2)")
        return updated_node.with_changes(body=body)


class _CapFusedLoss(cst.CSTTransformer):
    """liger's LigerFusedLinearCrossEntropyLoss never materialises logits; it takes the cap as softcap=."""

    def leave_Call(self, original_node: cst.Call, updated_node: cst.Call) -> cst.Call:
        if not m.matches(updated_node, _LIGER_LOSS) or m.matches(updated_node, _HAS_SOFTCAP):
            return updated_node
        args = list(updated_node.args)
        if args and args[-1].comma is cst.MaybeSentinel.DEFAULT:
            args[-1] = args[-1].with_changes(comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" ")))
        return updated_node.with_changes(args=[*args, *_cst.expr("f(softcap=LOGIT_SOFTCAP)").args])


class X0Shortcut(Move):
    name = "x0_shortcut"
    category = "embedding"
    description = ("each block's input mixes the residual stream with the embedding output x0 through learnable "
                   "per-layer scalars resid_lambdas, x0_lambdas (modded-nanogpt)")

    def transform(self, module: cst.Module) -> cst.Module:
        model = _model(module)
        if _uses(model.cls, "x0_lambdas"):
            raise NotApplicable("already has the x0 shortcut: self.x0_lambdas is used")
        if (found := _find_statement(model.cls, _is_blocks_loop)) is None:
            raise NotApplicable(f"no `for block in self.<blocks>: x = block(x)` loop in {model.cls.name.value}")
        method, at = found
        loop = method.body.body[at]
        x, blocks = loop.body.body[0].body[0].targets[0].target.value, _cst.code(loop.iter)
        saved = _cst.statements(f"x0 = {x}  # mixed into every block's input")
        method = _splice(method, at, at + 1, [*saved, _x0_loop(loop)])
        nn = _nn(module)
        cls = _append_to_init(_with_method(model.cls, method), f"""
            self.resid_lambdas = {nn}.Parameter(torch.ones(len({blocks})))  # x0 shortcut: weight of the residual stream
            self.x0_lambdas = {nn}.Parameter(torch.zeros(len({blocks})))  # and of the embedding output x0
        """)
        return _replace(module, model.cls, cls)


def _x0_loop(loop: cst.For) -> cst.For:
    """`for i, block in enumerate(self.<blocks>): x = block(self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0)`."""
    line = loop.body.body[0]
    assign = line.body[0]
    first, *rest = assign.value.args
    mixed = _cst.expr(f"self.resid_lambdas[i] * {first.value.value} + self.x0_lambdas[i] * x0")
    call = assign.value.with_changes(args=[first.with_changes(value=mixed), *rest])
    body = loop.body.with_changes(body=[line.with_changes(body=[assign.with_changes(value=call)])])
    target, blocks = _cst.expr(f"i, {loop.target.value}"), _cst.expr(f"enumerate({_cst.code(loop.iter)})")
    return loop.with_changes(target=target, iter=blocks, body=body)


def _is_blocks_loop(statement: cst.CSTNode) -> bool:
    """`for block in self.<blocks>: x = block(x, ...)`: same name fed in and assigned."""
    if not m.matches(statement, _BLOCKS_LOOP):
        return False
    assign = statement.body.body[0].body[0]
    first = assign.value.args[0].value
    return (assign.value.func.value == statement.target.value and isinstance(first, cst.Name)
            and first.value == assign.targets[0].target.value)


class Smear(Move):
    name = "smear"
    category = "embedding"
    description = ("smear each token's embedding with the previous token's through a learnable gate, "
                   "initialised at 0 (modded-nanogpt smear)")

    def transform(self, module: cst.Module) -> cst.Module:
        model = _model(module)
        if _uses(model.cls, "smear_gate"):
            raise NotApplicable("already smeared: self.smear_gate is used")
        site = _embedding_site(model)
        x = site.variable
        # causal: position t only adds position t-1
        smeared = f"torch.cat([{x}[:, :1], {x}[:, 1:] + self.smear_gate * {x}[:, :-1]], dim=1)"
        method = _insert(site.method, site.at + 1, f"{x} = {smeared}  # smear in the previous token")
        gate = f"self.smear_gate = {_nn(module)}.Parameter(torch.zeros(1))  # 0: the smear starts as the identity"
        return _replace(module, model.cls, _append_to_init(_with_method(model.cls, method), gate))


_BIGRAM_BUCKETS = '''
def bigram_buckets(idx):
    """Hashed (previous, current) token pair per position; position 0 has no previous token: last bucket."""
    pairs = torch.bitwise_xor(36313 * idx[:, 1:], 27191 * idx[:, :-1]) % (BIGRAM_BUCKETS - 1)
    return torch.cat([torch.full_like(idx[:, :1], BIGRAM_BUCKETS - 1), pairs], dim=1)
'''


class BigramEmbedding(Move):
    name = "bigram_embedding"
    category = "embedding"
    description = ("add a hashed bigram embedding E[hash(idx[t-1], idx[t]) % BIGRAM_BUCKETS] to the token embedding, "
                   "zero-initialised (modded-nanogpt bigram hash embedding; Hash Embeddings, Svenstrup et al. 2017)")
    knobs = ("BIGRAM_BUCKETS",)

    def transform(self, module: cst.Module) -> cst.Module:
        if _cst.constant_value(module, "BIGRAM_BUCKETS") is not None or _cst.defines(module, "bigram_buckets"):
            raise NotApplicable("already has a bigram embedding: BIGRAM_BUCKETS or bigram_buckets is defined")
        model = _model(module)
        if model.width is None:
            raise NotApplicable(f"the width of self.{model.embedding} = nn.Embedding(...) is not given")
        site = _embedding_site(model)
        x = site.variable
        added = f"{x} = {x} + self.bigram_embed(bigram_buckets({site.tokens}))  # hashed bigram"
        method = _insert(site.method, site.at + 1, added)
        nn = _nn(module)
        cls = _append_to_init(_with_method(model.cls, method), f"""
            self.bigram_embed = {nn}.Embedding(BIGRAM_BUCKETS, {_cst.code(model.width)})  # hashed token pairs
            {nn}.init.zeros_(self.bigram_embed.weight)  # starts as the identity
        """)
        module = _cst.insert_definitions(_cst.replace_class(module, model.cls.name.value, cls), _BIGRAM_BUCKETS)
        return _with_torch(_cst.add_constants(module, [(
            "BIGRAM_BUCKETS", "4096", "hashed bigram table rows, the last for position 0; knob: int[1024, 32768, log]",
        )]))


MOVES = [UntiedHead, ZeroInitProj, LogitSoftcap, X0Shortcut, Smear, BigramEmbedding]
