"""Folds the flags of what a single runtime process never does: distributed training, wandb, resuming.

Each flag gets the value a one-process, fresh, unlogged run has; branches on it collapse to the branch
taken, and its assignments go. A flag read anywhere else is left as a gone name, which adopt refuses.
"""
from __future__ import annotations

import libcst as cst

from mutations.adopt.notes import Notes
from mutations.adopt.syntax import BlockTransformer, assigned_names, only_small

# name -> (its value in a single fresh process, what folding it removes)
FLAGS: dict[str, tuple[object, str]] = {
    "ddp": (False, "the distributed (DDP) setup and branches: the runtime trains in one process"),
    "master_process": (True, "the distributed (DDP) setup and branches: the runtime trains in one process"),
    "wandb_log": (False, "wandb logging: the runner records the run"),
    "init_from": ("scratch", "resuming from a checkpoint (init_from): every run starts from scratch"),
    "eval_only": (False, "the evaluation-only mode: the trusted scorer evaluates"),
}
_UNKNOWN = object()


def fold_flags(module: cst.Module, notes: Notes) -> cst.Module:
    return module.visit(_Fold(notes))


class _Fold(BlockTransformer):
    def __init__(self, notes: Notes) -> None:
        self.notes = notes

    def leave_IfExp(self, original: cst.IfExp, updated: cst.IfExp) -> cst.BaseExpression:
        value, test = self._evaluate(updated.test)
        if value is _UNKNOWN:
            return updated.with_changes(test=test)
        return updated.body if value else updated.orelse

    def change(self, node: cst.BaseStatement) -> list[cst.BaseStatement] | None:
        if isinstance(node, cst.If):
            return self._fold(node)
        names = assigned_names(only_small(node))
        flags = [name for name in names if name in FLAGS]
        for name in flags:
            self._used(name)
        return [] if names and len(flags) == len(names) else None

    def _fold(self, node: cst.If) -> list[cst.BaseStatement] | None:
        value, test = self._evaluate(node.test)
        if value is _UNKNOWN:
            orelse = self._rest(node.orelse)
            if test is node.test and orelse is node.orelse:
                return None
            return [node.with_changes(test=test, orelse=orelse)]
        if value:
            return list(node.body.body)
        rest = self._rest(node.orelse)
        if rest is None:
            return []
        return list(rest.body.body) if isinstance(rest, cst.Else) else [rest]

    def _rest(self, orelse: cst.If | cst.Else | None) -> cst.If | cst.Else | None:
        """An elif/else chain with its known tests decided."""
        if not isinstance(orelse, cst.If):
            return orelse
        value, test = self._evaluate(orelse.test)
        if value is _UNKNOWN:
            return orelse.with_changes(test=test, orelse=self._rest(orelse.orelse))
        return cst.Else(body=orelse.body) if value else self._rest(orelse.orelse)

    def _evaluate(self, test: cst.BaseExpression) -> tuple[object, cst.BaseExpression]:
        """(the test's value, or _UNKNOWN; the test with its known parts dropped)."""
        if isinstance(test, cst.Name) and test.value in FLAGS:
            return self._used(test.value), test
        if isinstance(test, cst.UnaryOperation) and isinstance(test.operator, cst.Not):
            value, inner = self._evaluate(test.expression)
            return (_UNKNOWN, test.with_changes(expression=inner)) if value is _UNKNOWN else (not value, test)
        if isinstance(test, cst.Comparison) and len(test.comparisons) == 1 and isinstance(test.left, cst.Name) \
                and test.left.value in FLAGS and isinstance(test.comparisons[0].comparator, cst.SimpleString):
            equal = self._used(test.left.value) == test.comparisons[0].comparator.evaluated_value
            if isinstance(test.comparisons[0].operator, cst.Equal):
                return equal, test
            if isinstance(test.comparisons[0].operator, cst.NotEqual):
                return not equal, test
        if isinstance(test, cst.BooleanOperation):
            return self._boolean(test)
        return _UNKNOWN, test

    def _boolean(self, test: cst.BooleanOperation) -> tuple[object, cst.BaseExpression]:
        is_and = isinstance(test.operator, cst.And)
        left, left_test = self._evaluate(test.left)
        right, right_test = self._evaluate(test.right)
        if left is not _UNKNOWN and bool(left) != is_and or right is not _UNKNOWN and bool(right) != is_and:
            return (not is_and), test  # one side decides: False for `and`, True for `or`
        if left is not _UNKNOWN and right is not _UNKNOWN:
            return is_and, test
        if left is not _UNKNOWN:
            return _UNKNOWN, right_test
        if right is not _UNKNOWN:
            return _UNKNOWN, left_test
        return _UNKNOWN, test.with_changes(left=left_test, right=right_test)

    def _used(self, name: str) -> object:
        value, what = FLAGS[name]
        self.notes.did(f"removed {what}")
        self.notes.remove(name, f"{name} belonged to {what.split(':')[0]}, which adopt removed")
        return value
