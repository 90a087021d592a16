"""The options of one search, with their defaults, as stored in the run so a resume uses the same ones.

The defaults finish a meaningful search on 2 idle CPU cores in about 25 minutes: a 300k-token top
rung (about 150 steps of the CPU baseline, 25-40 s a run), rungs at 1/4, 1/2 and 1 of it on
1, 2 and 3 seeds, a 10-minute search phase, then combine, ablation and the held-out test.
The lowest rung is 1/4, not 1/9: at 16 steps (1/9) the catalog's moves rank by how fast
they start (RoPE +0.03, bigram table -0.05 against -0.32 and -0.49 at the full budget),
at 37 steps (1/4) the rank correlation with the full budget is 0.73 and both are clearly
negative (benchmarks/results/fidelity.md).
On CPU budgets are in tokens (a shared machine turns wall-clock budgets into fitness
noise); on GPU they are in seconds, as in autoresearch.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from trainer.budget import Budget, BudgetUnit
from trainer.errors import UserError

DEFAULT_TOP_BUDGET = {("cpu", BudgetUnit.TOKENS): "300k", ("cpu", BudgetUnit.SECONDS): "40s",
                      ("cuda", BudgetUnit.TOKENS): "500M", ("cuda", BudgetUnit.SECONDS): "5min"}
DEFAULT_UNIT = {"cpu": BudgetUnit.TOKENS, "cuda": BudgetUnit.SECONDS}

# Options that define what the stored results mean: a resume with other values would mix
# incomparable evaluations, so it is refused.
IDENTITY = ("baseline_hash", "dataset", "budget", "fractions", "seeds", "eta", "device_kind", "seed", "eval_tokens")


@dataclass(frozen=True)
class EvolveConfig:
    run_dir: Path
    baseline: Path | None = None          # None: the built-in baseline
    baseline_hash: str = ""
    dataset: str = "shakespeare"
    mutator: str = "catalog"
    direction: str = ""                   # research direction text for an LLM mutator
    population: int = 8
    generations: int | None = None        # stop after this many children per population slot
    time_limit: float | None = 10 * 60    # seconds of search phase (before combine), None: no limit
    budget: str = ""                      # the top rung's budget, as written ("" = default for the device)
    fractions: tuple[float, ...] = (0.25, 0.5, 1.0)
    seeds: tuple[int, ...] = (1, 2, 3)
    eta: int = 3
    device: str = "auto"
    device_kind: str = "cpu"
    workers: int | None = None
    executor: str = "local"               # local or ray
    ray_address: str | None = None
    tune_share: float = 0.25              # share of children that are Optuna knob trials
    merge_share: float = 0.15             # share of children that merge two population members
    sampler: str = "tpe"                  # tpe or gp
    seed: int = 0
    alpha: float = 0.05                   # one-sided paired test threshold for acceptance
    prune_margin: float = 0.05            # stop a run whose probe is this fraction worse than its parent's
    recheck_every: int = 3                # re-check the best elite after this many acceptances
    recheck_seeds: int = 2
    combine_max: int = 6                  # most atomic mutations the combine step considers
    stack_trials: int = 4                 # knob trials on the final stack
    test_seeds: int = 3
    max_llm_cost: float | None = None
    storage: str | None = None            # SQLAlchemy URL; None: SQLite in the run directory
    eval_tokens: int | None = None        # validation tokens per evaluation (None: the device profile's)
    timeout: float | None = None          # seconds before an evaluation is killed (None: from its budget)
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.population < 2:
            raise UserError(f"--population must be at least 2, but got {self.population}")
        for name in ("tune_share", "merge_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise UserError(f"--{name.replace('_', '-')} must be between 0 and 1, but got {getattr(self, name)}")
        if self.tune_share + self.merge_share > 1:
            raise UserError("--tune-share plus --merge-share must not exceed 1: the rest are structural mutations")
        if not 0 < self.alpha < 1:
            raise UserError(f"--alpha must be between 0 and 1, but got {self.alpha}")
        if self.sampler not in ("tpe", "gp"):
            raise UserError(f"unknown sampler {self.sampler!r}: use tpe or gp")
        if self.executor not in ("local", "ray"):
            raise UserError(f"unknown executor {self.executor!r}: use local or ray")
        if self.generations is None and self.time_limit is None:
            raise UserError("give --generations or --time: without either the search would never stop")

    @property
    def top_budget(self) -> Budget:
        return Budget.parse(self.budget)

    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{Path(self.run_dir).resolve() / 'evotrain.db'}"

    def to_dict(self) -> dict:
        data = asdict(self)
        data["run_dir"] = str(self.run_dir)
        data["baseline"] = None if self.baseline is None else str(self.baseline)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> EvolveConfig:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["run_dir"] = Path(values["run_dir"])
        values["baseline"] = None if values.get("baseline") is None else Path(values["baseline"])
        for name in ("fractions", "seeds"):
            values[name] = tuple(values[name])
        return cls(**values)


def default_budget(device_kind: str, unit: str | None) -> str:
    kind = BudgetUnit(unit) if unit else DEFAULT_UNIT[device_kind]
    return DEFAULT_TOP_BUDGET[(device_kind, kind)]


def check_resume(stored: EvolveConfig, given: EvolveConfig) -> None:
    """A resumed run must measure the same thing: refuse other identity options in one line."""
    changed = [name for name in IDENTITY if getattr(stored, name) != getattr(given, name)]
    if changed:
        shown = ", ".join(f"{n} {getattr(stored, n)!r} -> {getattr(given, n)!r}" for n in changed)
        raise UserError(f"run {stored.run_dir} was started with other settings ({shown}): "
                        "resume with the same options, or start a new run with --name")
