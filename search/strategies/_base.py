"""The seam between the driver and a search strategy: ask and tell, as Optuna's study meets its samplers.

The driver claims, runs, commits and resumes evaluations and is the only writer of the store;
a strategy decides what to evaluate next (`ask`) and what each result means (`tell`), and in
the end what the search found (`outcome`). Everything a strategy may touch comes through a
`Search` (search/context.py): results, variants, atoms, decisions, proposals, events.

A strategy is rebuilt from the store when a search resumes: its constructor reads what the
store holds, and anything it asks that already finished is told back at once.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Generator
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, ClassVar

from search.evaluator import Request
from search.snapshot import MemberView, RungView
from trainer.result import EvalResult

if TYPE_CHECKING:
    from search.context import Search


class Signal(Enum):
    WAIT = "wait"   # nothing to start until a running evaluation finishes
    DONE = "done"   # the strategy has its outcome


@dataclass(frozen=True)
class Outcome:
    """What a strategy found: the variant it answers with, and the ablation of that variant's atoms."""

    stack: str                                     # variant id; the baseline when nothing helped
    ablation: list[dict] = field(default_factory=list)  # one row per member atom (see search/ablation.py)
    extra: dict = field(default_factory=dict)      # strategy-specific record (combine steps, ...)

    def to_dict(self) -> dict:
        return {"stack": self.stack, "ablation": self.ablation, "extra": self.extra}

    @classmethod
    def from_dict(cls, data: dict) -> Outcome:
        return cls(data["stack"], data.get("ablation", []), data.get("extra", {}))


@dataclass(frozen=True)
class View:
    """What the dashboard shows of a strategy's state."""

    population: list[MemberView] = field(default_factory=list)   # best first
    rungs: list[RungView] = field(default_factory=list)
    noise: dict | None = None        # {"sd", "mean", "n", "budget"}
    fidelity: list[dict] = field(default_factory=list)


class Strategy(ABC):
    name: ClassVar[str]
    # the ladder when --fractions / --seeds are not given: (budget fractions, seeds per rung)
    default_ladder: ClassVar[tuple[tuple[float, ...], tuple[int, ...]]] = ((1.0,), (1,))

    def __init__(self, search: Search) -> None:
        self.search = search

    @abstractmethod
    def ask(self) -> Request | Signal:
        """The next evaluation to run, WAIT, or DONE once the strategy's outcome is known."""

    @abstractmethod
    def tell(self, request: Request, result: EvalResult) -> None:
        """A result of something this strategy asked for, committed to the store already."""

    @abstractmethod
    def incumbent(self) -> str:
        """The variant this strategy would answer with if it stopped now (anytime curves)."""

    @abstractmethod
    def outcome(self) -> Outcome:
        """What it found; called once ask() returned DONE."""

    def view(self) -> View:
        return View()


Program = Generator[list[Request], None, object]


class Steps:
    """ask/tell over a plain generator that yields batches of requests: each batch runs in parallel, and the
    generator resumes once every result of it is in. Sequential stages (a combine step, the held-out test) read
    as straight-line code this way; a resumed search replays the generator, and what finished is told back at once.
    """

    def __init__(self, search: Search, program: Program) -> None:
        self.search, self._program = search, program
        self._batch: list[Request] = []
        self._done = False
        self.value: object = None

    def ask(self) -> Request | Signal:
        while not self._done:
            pending = [r for r in self._batch if self.search.result(r) is None]
            waiting = {r.key for r in self.search.in_flight()}
            startable = [r for r in pending if r.key not in waiting]
            if startable:
                return startable[0]
            if pending:
                return Signal.WAIT
            try:
                self._batch = list(self._program.send(None))
            except StopIteration as stop:
                self._done, self.value = True, stop.value
        return Signal.DONE

    def tell(self, request: Request, result: EvalResult) -> None:
        """Nothing to do: the generator reads results through the search when it resumes."""
