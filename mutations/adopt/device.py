"""Device and precision: runtime.device, runtime.autocast(), no loss scaling, torch.compile on CUDA only,
and no CUDA-only calls on a CPU run."""
from __future__ import annotations

import libcst as cst
import libcst.matchers as m

from mutations.adopt.notes import Notes
from mutations.adopt.syntax import (
    BlockTransformer,
    assigned_names,
    calls_any,
    code,
    dotted,
    expr,
    is_call_to,
    only_small,
)

_AUTOCAST = {"torch.amp.autocast", "torch.autocast", "torch.cuda.amp.autocast"}
_SCALER = {"torch.cuda.amp.GradScaler", "torch.amp.GradScaler", "torch.GradScaler"}
_CUDA_ONLY = {"torch.cuda.synchronize", "torch.cuda.empty_cache", "torch.cuda.reset_peak_memory_stats"}
_ON_CUDA = 'runtime.device.type == "cuda"'
_COMMENTS = {
    "scaler": "# adopt: runtime.autocast() is bf16 or nothing, so no loss scaling",
    "compile": "# adopt: compiled on CUDA only; on CPU compiling costs more than a short run gains",
}


def rewrite_device(module: cst.Module, notes: Notes) -> cst.Module:
    return module.visit(_Device(notes))


def _is_cuda(node: cst.CSTNode) -> bool:
    return isinstance(node, cst.SimpleString) and str(node.evaluated_value).startswith("cuda")


class _Device(BlockTransformer):
    def __init__(self, notes: Notes) -> None:
        self.notes = notes
        self.contexts: set[str] = set()   # names of the autocast contexts the script made

    def visit_SimpleStatementLine(self, node: cst.SimpleStatementLine) -> bool:
        small = only_small(node)
        if calls_any(node, _AUTOCAST) and assigned_names(small):
            self.contexts.update(assigned_names(small))  # before the `with` statements that use them
        return True

    def change(self, updated: cst.BaseStatement) -> list[cst.BaseStatement] | None:
        small = only_small(updated)
        if isinstance(small, cst.Expr) and isinstance(small.value, cst.Call) and is_call_to(small.value, _CUDA_ONLY):
            self.notes.did(f"removed {dotted(small.value.func)}() (CUDA only)")
            return []
        names = assigned_names(small)
        if names and calls_any(small.value, _AUTOCAST):
            self.notes.did(f"{names[0]} -> runtime.autocast()")
            return []
        if len(names) == 1 and _is_cuda(small.value):
            self.notes.did(f"{names[0]} = str(runtime.device)")
            return [updated.with_changes(body=[small.with_changes(value=expr("str(runtime.device)"))])]
        if names and m.matches(small.value, m.Call()) and is_call_to(small.value, _SCALER):
            value = small.value.with_changes(func=expr("torch.amp.GradScaler"), args=[cst.Arg(
                expr("False"), keyword=cst.Name("enabled"), equal=cst.AssignEqual(cst.SimpleWhitespace(""),
                                                                                  cst.SimpleWhitespace("")))])
            return [self._commented(updated.with_changes(body=[small.with_changes(value=value)]), "scaler")]
        if len(names) == 1 and m.matches(small.value, m.Call(args=[m.AtLeastN(n=1)])) \
                and dotted(small.value.func) == "torch.compile":
            guarded = cst.IfExp(test=expr(_ON_CUDA), body=small.value, orelse=small.value.args[0].value)
            return [self._commented(updated.with_changes(body=[small.with_changes(value=guarded)]), "compile")]
        return None

    def _commented(self, line: cst.SimpleStatementLine, why: str) -> cst.SimpleStatementLine:
        self.notes.did(_COMMENTS[why].removeprefix("# adopt: "))
        if line.trailing_whitespace.comment is not None:
            return line
        return line.with_changes(trailing_whitespace=cst.TrailingWhitespace(
            whitespace=cst.SimpleWhitespace("  "), comment=cst.Comment(_COMMENTS[why])))

    def leave_Call(self, original: cst.Call, updated: cst.Call) -> cst.BaseExpression:
        if dotted(updated.func) == "torch.device" and len(updated.args) == 1 and _is_cuda(updated.args[0].value):
            self.notes.did(f"{code(original)} -> runtime.device")
            return expr("runtime.device")
        return updated

    def leave_WithItem(self, original: cst.WithItem, updated: cst.WithItem) -> cst.WithItem:
        item = updated.item
        if isinstance(item, cst.Name) and item.value in self.contexts \
                or isinstance(item, cst.Call) and is_call_to(item, _AUTOCAST):
            return updated.with_changes(item=expr("runtime.autocast()"))
        return updated
