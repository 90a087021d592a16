"""The base of every catalog move: a named libcst transform with an applicability check."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import libcst as cst

from trainer.program import Program, is_multi_file


class NotApplicable(Exception):
    """The move cannot apply to this file; the message says why, in one line."""


@dataclass(frozen=True)
class Applicability:
    applies: bool
    reason: str  # why not, or "" when it applies


class Move(ABC):
    """A research move written against code patterns (a call to F.gelu, an nn.LayerNorm, an
    AdamW construction, ...) rather than one file's names, so it applies to other GPT scripts.
    """

    name: ClassVar[str]
    category: ClassVar[str]        # norm, attention, mlp, embedding, init, output, optimizer, schedule, regularization, shape, throughput
    description: ClassVar[str]     # one line
    knobs: ClassVar[tuple[str, ...]] = ()  # module-level constants the move introduces
    cuda_only: ClassVar[bool] = False      # changes nothing measurable on CPU
    targets_baseline: ClassVar[bool] = True  # False: the built-in baseline already has what it adds
    conflicts_with: ClassVar[tuple[str, ...]] = ()  # moves whose edits cannot merge with this one's
    requires: ClassVar[tuple[str, ...]] = ()        # moves that must be applied first (qk_norm for attn_temperature)

    @abstractmethod
    def transform(self, module: cst.Module) -> cst.Module:
        """The changed module; raise NotApplicable(reason) when the pattern is not there."""

    def apply(self, source: str) -> str:
        """The changed source; NotApplicable when the move does not apply or would change nothing.
        In a program (trainer.program) the move changes the first file, in program order, where it applies."""
        if not is_multi_file(source):
            return self._apply_to_file(source)
        program, reasons = Program.parse(source), []
        for name, text in program.files:
            try:
                return program.with_sources({name: self._apply_to_file(text)}).text
            except NotApplicable as reason:
                reasons.append(f"{name}: {reason}")
        raise NotApplicable("; ".join(reasons))

    def _apply_to_file(self, source: str) -> str:
        changed = self.transform(cst.parse_module(source)).code
        if changed == source:
            raise NotApplicable(f"{self.name} would change nothing here")
        return changed

    def check(self, source: str) -> Applicability:
        try:
            self.apply(source)
        except NotApplicable as reason:
            return Applicability(False, str(reason))
        return Applicability(True, "")
