"""The end of the run: what followed the training loop (evaluation, checkpoints, summary, teardown)
becomes runtime.finish(model); where model(idx) does not return every position's logits, a wrapper that
does, made before the loop, is what runtime.step probes and runtime.finish scores."""
from __future__ import annotations

import libcst as cst

from mutations.adopt.notes import Notes
from mutations.adopt.shape import Shape, loop_index
from mutations.adopt.syntax import statement

_WRAPPER = '''
class FullLogits(torch.nn.Module):
    """adopt: runtime.finish scores model(idx) as logits (batch, time, vocab) at every position, but this
    model's forward returns (logits, loss), and without targets may give the last position's logits only.
    Called with targets (the inputs; the loss is not used), its logits cover every position."""

    def __init__(self, model):
        super().__init__()
        self.model = getattr(model, "_orig_mod", model)  # torch.compile's wrapper: export the model it wraps

    def forward(self, idx):
        logits, _ = self.model(idx, idx)
        return logits
'''


def rewrite_finish(module: cst.Module, shape: Shape, notes: Notes) -> cst.Module:
    loop = loop_index(module)
    if len(module.body) > loop + 1:
        notes.did("replaced what followed the loop (evaluation, checkpoints, summary) with runtime.finish: "
                  "the trusted scorer evaluates")
    finish = statement(f"runtime.finish({shape.scored})").with_changes(leading_lines=[cst.EmptyLine()])
    before: list[cst.BaseStatement] = []
    if shape.wrap:
        notes.did(f"runtime.step and runtime.finish get full_logits = FullLogits({shape.model}): "
                  "the model's forward returns (logits, loss)")
        before = [cst.parse_statement(_WRAPPER.lstrip()).with_changes(leading_lines=[cst.EmptyLine()] * 2),
                  statement(f"{shape.scored} = FullLogits({shape.model})").with_changes(
                      leading_lines=[cst.EmptyLine()] * 2)]
    return module.with_changes(body=[*module.body[:loop], *before, module.body[loop], finish])
