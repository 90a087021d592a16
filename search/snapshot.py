"""What a search looks like at one moment: the data behind the live view and `search status`.

The driver builds a Snapshot every second for the live view and stores it in the run's
metadata every few seconds, so `search status` shows the same picture of a live run from
another terminal, and the last picture of a finished or killed one.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields


@dataclass(frozen=True)
class SlotView:
    slot: str               # "cpu#0", "cuda:1", "ray#3"
    variant: str            # short id
    origin: str             # catalog:rope, tune, merge, baseline
    purpose: str            # "rung 1", "smoke", "noise", "recheck", "stack", "ablation", "test"
    budget: str
    seed: int
    progress: float         # fraction of the budget done (0 when the executor cannot see it)
    seconds: float          # wall seconds since it started


@dataclass(frozen=True)
class RungView:
    budget: str
    seeds: int
    running: int            # evaluations of this rung in flight
    completed: int          # candidates that completed the rung
    promoted: int           # of them, promoted to the next rung (or accepted, at the top)


@dataclass(frozen=True)
class MemberView:
    variant: str
    origin: str
    description: str
    val_bpb: float          # mean over the top rung's seeds
    delta: float            # paired mean difference to the baseline on the same seeds (negative = better)
    ci_low: float | None
    ci_high: float | None
    n: int


@dataclass(frozen=True)
class Snapshot:
    run: str
    phase: str                              # search (or a strategy's stage: noise, combine, confirm), test, done, stopped
    elapsed: float                          # seconds since the search started (all sessions)
    remaining: float | None                 # seconds of search phase left, None without a time limit
    children: int                           # children proposed so far
    children_limit: int | None              # --generations x --population
    slots: list[SlotView] = field(default_factory=list)
    rungs: list[RungView] = field(default_factory=list)
    evaluations: dict[str, int] = field(default_factory=dict)   # status -> count (ok, crash, pruned, ...)
    decisions: dict[str, int] = field(default_factory=dict)     # kind -> count (accepted, rejected, ...)
    population: list[MemberView] = field(default_factory=list)  # best first
    noise: dict | None = None               # {"sd", "mean", "n", "budget"}: the seed noise the strategy reads against
    fidelity: list[dict] = field(default_factory=list)          # {"low", "high", "n", "spearman", "kendall"}
    llm_cost_usd: float = 0.0
    compute_seconds: float = 0.0            # wall seconds of every finished evaluation, summed
    recent: list[str] = field(default_factory=list)             # the latest events, one line each
    result: dict | None = None              # the combined stack and its held-out test, once known
    updated: float = 0.0                    # time.time() when the snapshot was taken
    strategy: str = ""                      # additive, asha, greedy, tpe

    @property
    def best(self) -> MemberView | None:
        return self.population[0] if self.population else None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Snapshot:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["slots"] = [SlotView(**s) for s in values.get("slots", [])]
        values["rungs"] = [RungView(**r) for r in values.get("rungs", [])]
        values["population"] = [MemberView(**m) for m in values.get("population", [])]
        return cls(**values)
