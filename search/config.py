"""The options of one search, with their defaults and help, as stored in the run so a resume uses the same ones.

Each option is declared once, here: `search evolve`'s command line is generated from these
fields (search/cli/evolve.py), so a default or a help text cannot drift between the two.

The defaults finish a search on the built-in baseline on 2 idle CPU cores in about 20
minutes: a 300k-token budget (about 150 steps of the CPU baseline, 25-40 s a run), the
additive strategy (one full-budget run decides a clear case: the baseline's seed sd at 300k
is 0.0055 where catalog effects are 0.04-0.49), a 12-minute search, then the confirmation
runs and the held-out test.
On CPU budgets are in tokens (a shared machine turns wall-clock budgets into fitness
noise); on GPU they are in seconds, as in autoresearch.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from fractions import Fraction
from pathlib import Path

from trainer.budget import Budget, BudgetUnit
from trainer.errors import UserError

DEFAULT_TOP_BUDGET = {("cpu", BudgetUnit.TOKENS): "300k", ("cpu", BudgetUnit.SECONDS): "40s",
                      ("cuda", BudgetUnit.TOKENS): "500M", ("cuda", BudgetUnit.SECONDS): "5min"}
DEFAULT_UNIT = {"cpu": BudgetUnit.TOKENS, "cuda": BudgetUnit.SECONDS}
STRATEGIES = ("additive", "asha", "greedy", "tpe")

# Options that define what the stored results mean: a resume with other values would mix
# incomparable evaluations, so it is refused.
IDENTITY = ("baseline_hash", "dataset", "strategy", "budget", "fractions", "seeds", "eta", "device_kind", "seed",
            "eval_tokens", "compat")


def _duration(text: str) -> float | None:
    if text.lower() in ("0", "none"):
        return None
    budget = Budget.parse(text)
    if budget.unit is not BudgetUnit.SECONDS:
        raise UserError(f"--time {text!r} is not a duration: write it like 12min, 90s or 1h")
    return budget.amount


def _compute(text: str) -> str:
    if text.lower() in ("", "0", "none"):
        return ""
    return str(Budget.parse(text))


def parse_fractions(text: str) -> tuple[float, ...]:
    """`1/9,1/3,1` -> (0.111..., 0.333..., 1.0)."""
    try:
        return tuple(float(Fraction(part.strip())) for part in text.split(","))
    except (ValueError, ZeroDivisionError):
        raise UserError(f"cannot read rung fractions {text!r}: write them like 1/4,1/2,1") from None


def parse_counts(text: str) -> tuple[int, ...]:
    """`1,2,3` -> (1, 2, 3)."""
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise UserError(f"cannot read seed counts {text!r}: write one per rung, like 1,2,3") from None


def option(default: object, help: str, *, flag: str = "", parse: Callable[[str], object] | None = None,
           shown: str | None = None, kind: type | None = None, choices: tuple[str, ...] = ()) -> object:
    """A config field that is also a `search evolve` option: its default, help, and how the command line reads it
    (`parse` turns the text into the value; `shown` is the default as the user writes it)."""
    return field(default=default, metadata={"help": help, "flag": flag, "parse": parse, "shown": shown,
                                            "kind": kind, "choices": choices})


@dataclass(frozen=True)
class EvolveConfig:
    run_dir: Path
    baseline: Path | None = None          # None: the built-in baseline
    baseline_hash: str = ""
    direction: str = ""                   # research direction text for an LLM mutator
    device_kind: str = "cpu"
    strategy: str = option("additive", "How to search: additive (one Bayesian model of every change's effect, "
                           "Thompson sampling over stacks), asha (successive halving over a population), greedy "
                           "(autoresearch's keep-if-lower loop) or tpe (one Optuna study over the changes).",
                           choices=STRATEGIES)
    dataset: str = option("shakespeare", "shakespeare (built in), text:PATH (a file or folder of your text) or "
                          "parquet:PATH (text shards).")
    mutator: str = option("catalog", "catalog (built-in moves), catalog:MOVE,MOVE, anthropic (an LLM; needs "
                          "ANTHROPIC_API_KEY) or replay:PATH.")
    max_llm_cost: float | None = option(None, "Stop LLM calls after this many dollars.", kind=float)
    population: int = option(8, "Population size (asha); the runner-up stacks shown (additive).")
    generations: int | None = option(None, "Stop the search after GENERATIONS x POPULATION new variants "
                                     "(default: --time and --compute decide).", kind=int)
    time_limit: float | None = option(12 * 60, "Wall-clock length of the search, before the confirmation and the "
                                      "held-out test (none: --generations or --compute decides).", flag="--time",
                                      parse=_duration, shown="12min")
    compute: str = option("", "Stop the search once its evaluations have trained this much: tokens (6M) or "
                          "seconds (2h); the same for every strategy, so they compare at equal compute.",
                          parse=_compute)
    budget: str = option("", "Budget of one full evaluation: tokens (300k, 2M) or seconds (60s, 5min). Default: "
                         "300k tokens on CPU, 5min on a GPU.")
    fractions: tuple[float, ...] | None = option(None, "Rung budgets as fractions of --budget (default: asha "
                                                 "1/4,1/2,1; the others 1).", parse=parse_fractions)
    seeds: tuple[int, ...] | None = option(None, "Seeds per rung (default: asha 1,2,3; additive 4, the seeds its "
                                           "runs rotate over; greedy 1).", parse=parse_counts)
    eta: int = option(3, "Promote the best 1/ETA of each rung (asha).")
    device: str = option("auto", "auto, cpu, cuda or cuda:N.")
    workers: int | None = option(None, "Parallel evaluations (default: one per GPU; on CPU min(cores, 4)).", kind=int)
    executor: str = option("local", "local subprocesses, or Ray tasks (pip install 'evotrain[ray]').",
                           choices=("local", "ray"))
    ray_address: str | None = option(None, "Address of an existing Ray cluster (default: start one).", kind=str)
    tune_share: float = option(0.25, "Share of children that are knob trials (asha).")
    merge_share: float = option(0.15, "Share of children that merge two members (asha).")
    sampler: str = option("tpe", "Optuna sampler for the knobs (asha, tpe).", choices=("tpe", "gp"))
    seed: int = option(0, "Seed of the search (selection, proposals, seeds).")
    alpha: float = option(0.05, "Accept a change when a one-sided paired t-test gives p < ALPHA (asha).")
    prune_margin: float = option(0.05, "Stop a run early when a probe is this fraction worse than its "
                                 "reference's (0: never).")
    recheck_every: int = option(3, "Re-check the best elite on fresh seeds after this many acceptances (asha).")
    recheck_seeds: int = 2
    combine_max: int = option(6, "Most atomic changes the combine step stacks (asha).")
    stack_trials: int = option(4, "Knob trials on the final stack (asha).")
    confirm_runs: int = option(6, "Most confirmation runs of the final stack's uncertain members (additive).")
    test_seeds: int = option(3, "Fresh seeds for the held-out test.")
    storage: str | None = option(None, "SQLAlchemy URL of the store (default: SQLite in the run directory).",
                                 kind=str)
    eval_tokens: int | None = option(None, "Validation tokens per evaluation (default: 65k on CPU, 2M on a GPU).",
                                     kind=int)
    timeout: float | None = option(None, "Kill an evaluation after this many seconds (default: from its budget).",
                                   kind=float)
    compat: bool = option(False, "Accept scores that autoresearch-style scripts print themselves (compatibility "
                          "mode: untrusted, marked so everywhere).")
    require_isolation: bool = option(False, "Refuse to run without namespace isolation (Linux user namespaces).")
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise UserError(f"unknown strategy {self.strategy!r}: use one of {', '.join(STRATEGIES)}")
        if self.population < 2:
            raise UserError(f"--population must be at least 2, but got {self.population}")
        for name in ("tune_share", "merge_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise UserError(f"--{name.replace('_', '-')} must be between 0 and 1, but got {getattr(self, name)}")
        if self.tune_share + self.merge_share > 1:
            raise UserError("--tune-share plus --merge-share must not exceed 1: the rest are structural mutations")
        if not 0 < self.alpha < 1:
            raise UserError(f"--alpha must be between 0 and 1, but got {self.alpha}")
        if self.confirm_runs < 0:
            raise UserError(f"--confirm-runs must be 0 or more, but got {self.confirm_runs}")
        if self.generations is None and self.time_limit is None and not self.compute:
            raise UserError("give --generations, --time or --compute: without one the search would never stop")

    @property
    def top_budget(self) -> Budget:
        return Budget.parse(self.budget)

    @property
    def compute_limit(self) -> Budget | None:
        return Budget.parse(self.compute) if self.compute else None

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
        values.setdefault("strategy", "asha")  # runs stored before strategies existed searched by successive halving
        for name in ("fractions", "seeds"):
            if values.get(name) is not None:
                values[name] = tuple(values[name])
        return cls(**values)


def options() -> list:
    """The fields that are command-line options, in declaration order."""
    return [f for f in fields(EvolveConfig) if "help" in f.metadata]


def option_help(name: str) -> str:
    """The help text of one option (for commands that share it)."""
    return next(f.metadata["help"] for f in options() if f.name == name)


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
