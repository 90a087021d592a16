"""What one evaluation of one variant produced: a status, metrics and the tail of its log."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from enum import Enum

from trainer.budget import BudgetUnit


class Status(str, Enum):
    OK = "ok"
    CRASH = "crash"              # the script raised, or died from a signal
    TIMEOUT = "timeout"          # killed at the runner's deadline
    OOM = "oom"                  # over the memory limit (host or device)
    NAN = "nan"                  # non-finite training loss or validation loss
    LEAK = "leak"                # logits at position t depend on tokens after t
    INVALID = "invalid"          # broke the runtime contract (bad logits, no finish, ...)
    OVER_BUDGET = "over_budget"  # trained past the budget, or spent far more compute than its model needs
    PRUNED = "pruned"            # stopped early by the caller (a scheduler's loser)

    def is_ok(self) -> bool:
        return self is Status.OK

    def is_failure(self) -> bool:
        """Failures are the variant's fault; a pruned run is a judgement, not a failure."""
        return self not in (Status.OK, Status.PRUNED)


@dataclass(frozen=True)
class CurvePoint:
    """An intermediate evaluation on the small validation slice, streamed during training."""

    progress: float  # fraction of the budget spent
    step: int
    tokens: int
    seconds: float   # training seconds so far (warm-up and evaluations excluded)
    val_bpb: float
    train_loss: float | None = None


@dataclass(frozen=True)
class EvalResult:
    status: Status
    message: str = ""            # one line: why it failed, or what is notable
    trusted: bool = True         # False for scripts that print their own score (compatibility mode)
    val_bpb: float | None = None
    curve: tuple[CurvePoint, ...] = ()
    steps: int = 0
    tokens: int = 0
    training_seconds: float = 0.0
    wall_seconds: float = 0.0
    tokens_per_second: float = 0.0
    peak_memory_mb: float = 0.0  # device memory on CUDA, resident memory on CPU
    device: str = ""
    budget: str = ""             # as written, e.g. "500k" or "30s"
    budget_unit: str = ""
    seed: int = 0
    split: str = "val"
    log_tail: str = ""
    extra: dict = field(default_factory=dict)  # anything else measured (start-up, scoring, the check, the start event)
    isolation: str = ""          # "namespaces" or "process" (the fallback sandbox); "" before it was recorded
    cpu_seconds: float = 0.0     # CPU time of the training process tree, measured from outside it
    flops: float = 0.0           # training FLOPs: 3 x forward FLOPs per token x tokens (extra["flops_counted_by"])

    @property
    def overhead_seconds(self) -> float:
        """Wall time not spent training: start-up, imports, data, evaluation, teardown."""
        return max(0.0, self.wall_seconds - self.training_seconds)

    def spent(self, unit: BudgetUnit) -> float:
        """The compute this run spent in a budget unit: tokens, FLOPs, or wall seconds."""
        return {BudgetUnit.TOKENS: self.tokens, BudgetUnit.FLOPS: self.flops}.get(unit, self.wall_seconds)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["status"] = self.status.value
        return data

    @classmethod
    def from_dict(cls, data: dict) -> EvalResult:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["status"] = Status(values["status"])
        values["curve"] = tuple(CurvePoint(**point) for point in values.get("curve", ()))
        return cls(**values)
