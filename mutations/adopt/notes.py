"""What adopting a script found: the summary of conversions, the names it removed, the refusals."""
from __future__ import annotations

from dataclasses import dataclass, field

from trainer.errors import UserError


@dataclass(frozen=True)
class Refusal:
    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


class AdoptError(UserError):
    """Every construct adopt cannot convert, in one line: nothing is written."""

    def __init__(self, refusals: list[Refusal]) -> None:
        self.refusals = refusals
        super().__init__("cannot adopt: " + "; ".join(map(str, refusals))
                         + " (convert these by hand to the runtime contract, see README 'The train.py contract', "
                           "then adopt again)")


@dataclass
class Notes:
    """Filled by the passes: what they converted, and why each name they removed is gone."""
    summary: list[str] = field(default_factory=list)
    gone: dict[str, str] = field(default_factory=dict)   # removed name -> why its remaining uses cannot stay

    def did(self, line: str) -> None:
        if line not in self.summary:
            self.summary.append(line)

    def remove(self, name: str, why: str) -> None:
        self.gone.setdefault(name, why)
