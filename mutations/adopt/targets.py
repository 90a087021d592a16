"""The model's forward: `targets.view(...)` becomes `targets.reshape(...)`. The runtime's targets are a
slice of one window, not contiguous, and view() refuses them; reshape() copies only then."""
from __future__ import annotations

import libcst as cst
import libcst.matchers as m

from mutations.adopt.notes import Notes


def rewrite_targets(module: cst.Module, model_class: str, file: str, notes: Notes) -> cst.Module:
    return module.visit(_Targets(model_class, file, notes))


class _Targets(cst.CSTTransformer):
    def __init__(self, model_class: str, file: str, notes: Notes) -> None:
        self.model_class, self.file, self.notes = model_class, file, notes
        self.targets: list[str] = []   # the targets parameter of the forward being visited, if any

    def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
        params = node.params.params
        self.targets.append(params[2].name.value if node.name.value == "forward" and len(params) >= 3 else "")
        return True

    def leave_FunctionDef(self, original: cst.FunctionDef, updated: cst.FunctionDef) -> cst.FunctionDef:
        self.targets.pop()
        return updated

    def visit_ClassDef(self, node: cst.ClassDef) -> bool:
        return node.name.value == self.model_class

    def leave_Attribute(self, original: cst.Attribute, updated: cst.Attribute) -> cst.Attribute:
        if self.targets and self.targets[-1] and m.matches(updated, m.Attribute(value=m.Name(self.targets[-1]),
                                                                                attr=m.Name("view"))):
            self.notes.did(f"{self.file}: {self.targets[-1]}.view -> {self.targets[-1]}.reshape in "
                           f"{self.model_class}.forward: the runtime's targets are not contiguous")
            return updated.with_changes(attr=cst.Name("reshape"))
        return updated
