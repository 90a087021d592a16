"""Data: the loader becomes runtime.next_batch, the context length runtime.seq_len, the vocabulary size
runtime.vocab_size; the configurator, which set them from the command line, goes."""
from __future__ import annotations

import libcst as cst
import libcst.matchers as m

from mutations.adopt.notes import Notes
from mutations.adopt.shape import Loader
from mutations.adopt.syntax import (
    assigned_names,
    calls_any,
    code,
    expr,
    only_small,
    rebuild,
    statement,
)

_VOCAB_FROM_META = m.Assign(value=m.Subscript(slice=[m.SubscriptElement(m.Index(m.SimpleString()))]))


def rewrite_data(module: cst.Module, loader: Loader, notes: Notes) -> cst.Module:
    return module.visit(_Data(loader, notes))


class _Data(cst.CSTTransformer):
    def __init__(self, loader: Loader, notes: Notes) -> None:
        self.loader, self.notes = loader, notes
        self.batch = f"runtime.next_batch({code(loader.batch)}, {code(loader.seq)})"

    def leave_Module(self, original: cst.Module, updated: cst.Module) -> cst.Module:
        return updated.with_changes(body=rebuild(updated.body, self._change))

    def _change(self, line: cst.BaseStatement) -> list[cst.BaseStatement] | None:
        if isinstance(line, cst.FunctionDef) and line.name.value == self.loader.name:
            self.notes.remove(line.name.value, f"{line.name.value} read the data files: the runtime serves the "
                                               "training batches (runtime.next_batch) and no others")
            return []
        small = only_small(line)
        names = assigned_names(small)
        if self.loader.name in names and self.loader.iterator:
            return []
        if _configurator(line):
            self.notes.did("removed the configurator (exec of configurator.py): edit the values in the file")
            for name in names:
                self.notes.remove(name, f"{name} held the configurator's globals, which adopt removed")
            return []
        if calls_any(line, {"pickle.load"}):
            return self._vocab_from_meta(line)
        if names == [code(self.loader.seq)] and isinstance(small.value, cst.Integer):
            self.notes.did(f"{names[0]} = runtime.seq_len: the runtime's context length")
            return [line.with_changes(body=[small.with_changes(value=expr("runtime.seq_len"))])]
        return None

    def _vocab_from_meta(self, line: cst.BaseStatement) -> list[cst.BaseStatement] | None:
        """The block reading meta.pkl becomes `NAME = runtime.vocab_size` for the name it set."""
        for assign in m.findall(line, _VOCAB_FROM_META):
            if assign.value.slice[0].slice.value.evaluated_value == "vocab_size" and assigned_names(assign):
                self.notes.did(f"{assigned_names(assign)[0]} = runtime.vocab_size, not read from meta.pkl")
                return [statement(f"{assigned_names(assign)[0]} = runtime.vocab_size")]
        return None

    def leave_Call(self, original: cst.Call, updated: cst.Call) -> cst.BaseExpression:
        loader = self.loader
        if loader.iterator and m.matches(updated, m.Call(func=m.Name("next"), args=[m.Arg(m.Name(loader.name))])) \
                or not loader.iterator and m.matches(updated, m.Call(func=m.Name(loader.name),
                                                                     args=[m.Arg(m.SimpleString())])) \
                and updated.args[0].value.evaluated_value == "train":
            self.notes.did(f"{code(original)} -> {self.batch}")
            return expr(self.batch)
        if m.matches(updated, m.Call(func=m.Attribute(attr=m.Name("get_vocab_size")), args=[])):
            self.notes.did(f"{code(original)} -> runtime.vocab_size")
            return expr("runtime.vocab_size")
        return updated

    def leave_Assign(self, original: cst.Assign, updated: cst.Assign) -> cst.Assign:
        """`x, y, epoch = next(loader)`: the runtime's batch is (inputs, targets) only."""
        target = updated.targets[0].target if len(updated.targets) == 1 else None
        if self.loader.iterator and isinstance(target, cst.Tuple) and len(target.elements) > 2 \
                and m.matches(original.value, m.Call(func=m.Name("next"), args=[m.Arg(m.Name(self.loader.name))])):
            for element in target.elements[2:]:
                self.notes.remove(code(element.value), "the runtime's batches are (inputs, targets), with no epoch")
            elements = [*target.elements[:1], target.elements[1].with_changes(comma=cst.MaybeSentinel.DEFAULT)]
            return updated.with_changes(targets=[updated.targets[0].with_changes(
                target=target.with_changes(elements=elements))])
        return updated


def _configurator(line: cst.BaseStatement) -> bool:
    """exec(open('configurator.py').read()) and the globals() bookkeeping around it."""
    return calls_any(line, {"exec"}) and "configurator" in code(line) or calls_any(line, {"globals"}) \
        and isinstance(only_small(line), cst.Assign)
