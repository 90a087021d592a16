"""The training loop: `while runtime.keep_training():`, its own stops and evaluations removed, schedules
driven by runtime.progress(), and runtime.step(model, loss) after each optimizer step."""
from __future__ import annotations

import libcst as cst
import libcst.matchers as m

from mutations.adopt.notes import Notes
from mutations.adopt.shape import EVALUATIONS, Limit, Shape, is_limit, loop_index
from mutations.adopt.syntax import calls_any, code, expr, rebuild, statement

_OPTIMIZER_STEP = {".step", ".zero_grad", ".update"}


def rewrite_loop(module: cst.Module, shape: Shape, notes: Notes) -> cst.Module:
    index = loop_index(module)
    loop = module.body[index]

    def change(line: cst.BaseStatement) -> list[cst.BaseStatement] | None:
        if is_limit(line):
            notes.did(f"removed the stop `{code(line.test)}`: the runtime ends training at the budget")
            return []
        if isinstance(line, cst.If) and calls_any(line, EVALUATIONS):
            notes.did("removed the evaluation and checkpoints in the loop: the trusted scorer evaluates the "
                      "model runtime.finish() hands over")
            return []
        return None

    body = rebuild(loop.body.body, change)
    last = max((i for i, line in enumerate(body) if calls_any(line, _OPTIMIZER_STEP) and not _runtime(line)),
               default=len(body) - 1)
    body.insert(last + 1, statement(f"runtime.step({shape.scored}, {shape.loss})"))
    notes.did(f"runtime.step({shape.scored}, {shape.loss}) after each optimizer step")
    loop = loop.with_changes(test=expr("runtime.keep_training()"), body=loop.body.with_changes(body=body))
    loop = loop.visit(_Schedules(module, shape.limits, notes))
    notes.did("while runtime.keep_training(): the runtime owns the budget")
    return module.with_changes(body=[*module.body[:index], loop, *module.body[index + 1:]])


def _runtime(line: cst.CSTNode) -> bool:
    return bool(m.findall(line, m.Attribute(value=m.Name("runtime"))))


class _Schedules(cst.CSTTransformer):
    """counter / limit -> runtime.progress(); schedule(counter) -> schedule(int(runtime.progress() * limit)),
    for an iteration counter: the schedule keeps its shape and knobs, stretched over the budget."""

    def __init__(self, module: cst.Module, limits: tuple[Limit, ...], notes: Notes) -> None:
        self.limits, self.notes = limits, notes
        self.functions = {f.name.value for f in module.body if isinstance(f, cst.FunctionDef)}

    def leave_BinaryOperation(self, original: cst.BinaryOperation,
                              updated: cst.BinaryOperation) -> cst.BaseExpression:
        for limit in self.limits:
            if m.matches(updated, m.BinaryOperation(left=m.Name(limit.counter), operator=m.Divide())) \
                    and updated.right.deep_equals(limit.limit):
                self.notes.did(f"{code(original)} -> runtime.progress()")
                return expr("runtime.progress()")
        return updated

    def leave_Call(self, original: cst.Call, updated: cst.Call) -> cst.BaseExpression:
        if not (isinstance(updated.func, cst.Name) and updated.func.value in self.functions):
            return updated
        args = list(updated.args)
        for i, arg in enumerate(args):
            for limit in self.limits:
                if limit.per_step and m.matches(arg.value, m.Name(limit.counter)):
                    args[i] = arg.with_changes(value=expr(f"int(runtime.progress() * {code(limit.limit)})"))
                    self.notes.did(f"{code(original)} -> {updated.func.value}"
                                   f"(int(runtime.progress() * {code(limit.limit)})): the schedule follows the budget")
        return updated.with_changes(args=args)
