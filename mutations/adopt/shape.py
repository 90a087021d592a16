"""What the script is made of: its training loop, data loader, limits, loss and model, found before
any rewrite; and the refusals for what adopt cannot recognise, with their lines."""
from __future__ import annotations

from dataclasses import dataclass

import libcst as cst
import libcst.matchers as m
from libcst.metadata import MetadataWrapper, PositionProvider

from mutations.adopt.notes import Refusal
from mutations.adopt.syntax import (
    assigned_names,
    calls,
    calls_any,
    code,
    dotted,
    is_call_to,
    only_small,
)

GPU_ONLY_MODULES = ("kernels", "flash_attn", "triton")      # no CPU fallback the scorer could export
EVALUATIONS = {"estimate_loss", "evaluate_bpb", "torch.save"}  # evaluation and checkpoints, replaced by finish
_OPTIMIZER_STEP = {".step", ".zero_grad"}
_EPILOGUE_CALLS = {"print", "destroy_process_group", "torch.cuda.synchronize", "torch.save", ".eval", ".finish"}
# what a summary after the loop computes: timings, memory statistics, arithmetic
_SUMMARY_CALLS = EVALUATIONS | {"time.time", "time.perf_counter", ".max_memory_allocated", "min", "max", "int", "float",
                                "round", "sum", "len"}


@dataclass(frozen=True)
class Loader:
    name: str                    # get_batch (a function reading a memmap) or the iterator make_dataloader made
    iterator: bool               # next(name) rather than name('train')
    batch: cst.BaseExpression
    seq: cst.BaseExpression


@dataclass(frozen=True)
class Limit:
    counter: str                 # iter_num, or total_training_time
    limit: cst.BaseExpression    # max_iters, or TIME_BUDGET
    per_step: bool               # counts optimizer steps (`+= 1`), not elapsed time


@dataclass(frozen=True)
class Shape:
    loader: Loader
    limits: tuple[Limit, ...]
    model: str
    loss: str
    wrap: bool                   # model(idx) does not return every position's logits: finish gets a wrapper
    model_class: str             # the class of the model
    model_file: str              # the file that defines it: the script or a local module

    @property
    def scored(self) -> str:
        """What runtime.step (for its probes) and runtime.finish get: the model, or its FullLogits wrapper."""
        return "full_logits" if self.wrap else self.model


class Detector:
    """Reads one script (and the local modules it imports); collects every refusal rather than the first."""

    def __init__(self, name: str, wrapper: MetadataWrapper, local: dict[str, MetadataWrapper]) -> None:
        self.name, self.module, self.local = name, wrapper.module, local
        self.positions = {name: wrapper.resolve(PositionProvider),
                          **{file: w.resolve(PositionProvider) for file, w in local.items()}}
        self.refusals: list[Refusal] = []

    def refuse(self, node: cst.CSTNode, reason: str, file: str | None = None) -> None:
        file = file or self.name
        self.refusals.append(Refusal(file, self.positions[file][node].start.line, reason))

    def detect(self) -> Shape | None:
        for file, module in [(self.name, self.module), *((f, w.module) for f, w in self.local.items())]:
            self._gpu_only(file, module)
        loops = [i for i, s in enumerate(self.module.body) if isinstance(s, cst.While)]
        if len(loops) != 1:
            others = [s for s in self.module.body if isinstance(s, cst.For)]
            where = self.module.body[loops[1]] if loops else others[0] if others else self.module.body[0]
            self.refuse(where, f"expected one top-level `while` training loop, found {len(loops)}: adopt converts "
                               "a module-level `while True:` loop (write a `for` loop as one, stopped by "
                               "`if step >= N: break`)")
            return None
        loop = self.module.body[loops[0]]
        loader = self._loader(loop)
        limits = self._limits(loop)
        loss = self._loss(loop)
        model = self._model(loop, loss) if loss else None
        if not calls_any(loop, _OPTIMIZER_STEP):
            self.refuse(loop, "no optimizer.step() or zero_grad() in the training loop")
        self._breaks(loop)
        for statement in self.module.body[loops[0] + 1:]:
            self._epilogue(statement)
        found = self._model_class(model) if model else None
        if model and found is None:
            self.refuse(self.module.body[0], f"cannot find the class of {model} in {self.name} or the local modules "
                                             "it imports: adopt checks that model(idx) returns every position's logits")
        wrap = self._wraps(found[0], found[1]) if found else False
        if self.refusals or loader is None or loss is None or model is None or found is None:
            return None
        return Shape(loader, limits, model, loss, wrap, found[2].name.value, found[0])

    # ---------------------------------------------------------------- GPU-only code
    def _gpu_only(self, file: str, module: cst.Module) -> None:
        for node in m.findall(module, m.Import() | m.ImportFrom()):
            names = [dotted(a.name) for a in node.names] if isinstance(node, cst.Import) else [dotted(node.module)]
            for name in names:
                if name and name.split(".")[0] in GPU_ONLY_MODULES:
                    self.refuse(node, f"imports {name}, GPU-only kernels with no CPU fallback: use "
                                      "F.scaled_dot_product_attention or plain torch instead", file)
        for call in calls(module):
            if (dotted(call.func) or "").endswith("get_kernel"):
                self.refuse(call, f"{code(call.func)}(...) loads a GPU-only kernel with no CPU fallback: "
                                  "use F.scaled_dot_product_attention or plain torch instead", file)

    # ---------------------------------------------------------------- data
    def _loader(self, loop: cst.While) -> Loader | None:
        """The loader the loop takes its batches from; None, refused, when there is none adopt knows."""
        refused = len(self.refusals)
        loader = self._find_loader()
        if loader is None and len(self.refusals) > refused:
            return None  # found, but unreadable: already refused
        if loader is not None:
            fetch = m.Call(func=m.Name("next"), args=[m.Arg(m.Name(loader.name))]) if loader.iterator \
                else m.Call(func=m.Name(loader.name), args=[m.Arg(m.SimpleString())])
            if m.findall(loop, fetch):
                return loader
        self.refuse(loop, "the training loop takes no batch adopt recognises: nanoGPT's get_batch('train') "
                          "reading a np.memmap, or autoresearch's next(loader) from make_dataloader")
        return None

    def _find_loader(self) -> Loader | None:
        for statement in self.module.body:
            if isinstance(statement, cst.FunctionDef) and calls_any(statement, {"np.memmap", "numpy.memmap"}):
                return self._memmap_loader(statement)
            small = only_small(statement)
            if isinstance(small, cst.Assign) and isinstance(small.value, cst.Call) \
                    and (dotted(small.value.func) or "").endswith("make_dataloader"):
                args = small.value.args
                if len(args) >= 3 and len(assigned_names(small)) == 1:
                    return Loader(assigned_names(small)[0], True, args[1].value, args[2].value)
                self.refuse(statement, "cannot read make_dataloader's batch size and length "
                                       "(expected name = make_dataloader(tokenizer, batch_size, seq_len, split))")
        return None

    def _memmap_loader(self, function: cst.FunctionDef) -> Loader | None:
        for call in calls(function):
            if dotted(call.func) == "torch.randint" and len(call.args) == 2 \
                    and m.matches(call.args[0].value, m.BinaryOperation(operator=m.Subtract())) \
                    and isinstance(call.args[1].value, cst.Tuple) and call.args[1].value.elements:
                return Loader(function.name.value, False, call.args[1].value.elements[0].value,
                              call.args[0].value.right)
        self.refuse(function, f"cannot tell the batch size and length {function.name.value} reads (expected "
                              "torch.randint(len(data) - block_size, (batch_size,)))")
        return None

    # ---------------------------------------------------------------- the loop
    def _limits(self, loop: cst.While) -> tuple[Limit, ...]:
        steps = {a.target.value for a in m.findall(loop.body, m.AugAssign(target=m.Name(), operator=m.AddAssign(),
                                                                          value=m.Integer("1")))}
        tests = [s.test for s in loop.body.body if is_limit(s)]
        if not m.matches(loop.test, m.Name("True")):
            tests.append(loop.test)
        limits = []
        for test in tests:
            for comparison in m.findall(test, m.Comparison()):
                pair = _counter_and_limit(comparison)
                if pair:
                    limits.append(Limit(pair[0], pair[1], pair[0] in steps))
        return tuple(limits)

    def _loss(self, loop: cst.While) -> str | None:
        for call in calls(loop):
            if m.matches(call.func, m.Attribute(attr=m.Name("backward"))):
                target = call.func.value
                if m.matches(target, m.Call(args=[m.Arg(value=m.Name())])):  # scaler.scale(loss).backward()
                    target = target.args[0].value
                if isinstance(target, cst.Name):
                    return target.value
        self.refuse(loop, "no loss.backward() in the training loop: adopt needs the loss it passes to runtime.step")
        return None

    def _model(self, loop: cst.While, loss: str) -> str | None:
        for assign in m.findall(loop, m.Assign()):
            if loss in assigned_names(assign):
                for call in calls(assign.value):
                    if isinstance(call.func, cst.Name) and call.func.value in _module_names(self.module):
                        return call.func.value
        self.refuse(loop, f"cannot tell which model computes {loss} in the training loop "
                          f"(expected {loss} = model(x, y) or logits, {loss} = model(x, y))")
        return None

    def _breaks(self, loop: cst.While) -> None:
        for statement in loop.body.body:
            if not is_limit(statement):
                for node in _loop_level(statement, cst.Break):
                    self.refuse(node, "a `break` adopt cannot map: the runtime decides when training stops; "
                                      "write the stop as `if CONDITION: break` directly in the loop")

    def _epilogue(self, statement: cst.BaseStatement) -> None:
        if not _summary(statement):
            self.refuse(statement, "a statement after the training loop adopt cannot map: the run ends with "
                                   "runtime.finish(model), and the scorer evaluates; move it before the loop or "
                                   "delete it")

    # ---------------------------------------------------------------- the model's output
    def _wraps(self, file: str, forward: cst.FunctionDef) -> bool:
        if not m.findall(forward, m.Return(value=m.Tuple())):
            return False
        if len(forward.params.params) < 3:
            self.refuse(forward, "forward returns a tuple and takes no targets: adopt cannot get every position's "
                                 "logits; make forward(idx) return logits (batch, time, vocab)", file)
        return True

    def _model_class(self, model: str) -> tuple[str, cst.FunctionDef, cst.ClassDef] | None:
        """(file, forward, class) of the class model is built from, in the script or a local module."""
        classes = {c.func.value for a in _top_assigns(self.module) if model in assigned_names(a)
                   for c in calls(a.value) if isinstance(c.func, cst.Name)}
        for file, module in [(self.name, self.module), *((f, w.module) for f, w in self.local.items())]:
            for node in module.body:
                if isinstance(node, cst.ClassDef) and node.name.value in classes:
                    for method in node.body.body:
                        if isinstance(method, cst.FunctionDef) and method.name.value == "forward":
                            return file, method, node
        return None


def loop_index(module: cst.Module) -> int:
    """Where the training loop is among the module's statements (detection made sure there is one)."""
    return next(i for i, s in enumerate(module.body) if isinstance(s, cst.While))


def is_limit(statement: cst.CSTNode) -> bool:
    """`if CONDITION: break`, with prints before the break at most: a stop the runtime takes over."""
    if not isinstance(statement, cst.If) or statement.orelse is not None:
        return False
    body = [only_small(s) if isinstance(s, cst.SimpleStatementLine) else s for s in statement.body.body] \
        if isinstance(statement.body, cst.IndentedBlock) else list(statement.body.body)
    return bool(body) and isinstance(body[-1], cst.Break) and all(
        m.matches(s, m.Expr(m.Call(func=m.Name("print")))) for s in body[:-1])


def _counter_and_limit(comparison: cst.Comparison) -> tuple[str, cst.BaseExpression] | None:
    """(iter_num, max_iters) from `iter_num > max_iters`, `iter_num >= max_iters` or `max_iters < iter_num`."""
    if len(comparison.comparisons) != 1:
        return None
    operator, right = comparison.comparisons[0].operator, comparison.comparisons[0].comparator
    if isinstance(operator, (cst.GreaterThan, cst.GreaterThanEqual)) and isinstance(comparison.left, cst.Name):
        return comparison.left.value, right
    if isinstance(operator, (cst.LessThan, cst.LessThanEqual)) and isinstance(right, cst.Name):
        return right.value, comparison.left
    return None


def _loop_level(node: cst.CSTNode, kind: type) -> list[cst.CSTNode]:
    """Nodes of kind in node, not inside a nested loop or function (a break there is not the loop's)."""
    if isinstance(node, kind):
        return [node]
    if isinstance(node, (cst.For, cst.While, cst.FunctionDef, cst.ClassDef)):
        return []
    return [found for child in node.children for found in _loop_level(child, kind)]


def _top_assigns(module: cst.Module) -> list[cst.Assign]:
    """Assignments at module level, inside if/with/try blocks too, not inside functions or classes."""
    found = []
    for statement in module.body:
        if isinstance(statement, (cst.FunctionDef, cst.ClassDef)):
            continue
        found += m.findall(statement, m.Assign())
    return found


def _module_names(module: cst.Module) -> set[str]:
    return {name for a in _top_assigns(module) for name in assigned_names(a)}


def _summary(statement: cst.BaseStatement) -> bool:
    """True for what may follow the loop: evaluation, checkpoints, teardown, and the summary it prints."""
    if isinstance(statement, (cst.If, cst.With)):
        blocks = [statement.body] + ([statement.orelse.body] if getattr(statement, "orelse", None) else [])
        return all(_summary(s) for block in blocks for s in block.body)
    small = only_small(statement)
    if isinstance(small, cst.Expr) and isinstance(small.value, cst.Call):
        return is_call_to(small.value, _EPILOGUE_CALLS)
    if isinstance(small, cst.Assign):
        return all(is_call_to(call, _SUMMARY_CALLS) for call in calls(small.value))
    return False
