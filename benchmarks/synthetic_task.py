"""A train.py stand-in with known ground truth, for thousands of search evaluations in minutes.

The stand-in is a real train.py-shaped source: module-level knobs (LEARNING_RATE, ...) and
one function per candidate change, `feature_07()`, which a move switches from `return False`
to `return True`. Everything the search does to it is real (libcst edits, structural diff,
3-way merge and rebase, knob extraction, Optuna, the store, the statistics); only the
evaluation is replaced: `SyntheticExecutor` reads the variant's phenotype (which features
are on, the knob values) and returns a hidden function of it plus seeded noise, instantly.

The hidden function, at the full budget: a baseline val_bpb, plus each present feature's
effect (a few clearly good, a few bad, most within the noise), plus one redundant pair
(two good features that overlap), plus a quadratic penalty for each knob away from its
optimum (the baseline's learning rate is off, its weight decay is already right). At a
fraction b of the budget, slow starters look worse than they are and fast starters better
(the short-horizon bias seen in benchmarks/fidelity.py). Noise is a per-seed component
shared by every variant (so paired comparisons cancel it) plus a per-variant component of
the chosen size, both larger at short budgets; the same variant on the same seed always
scores the same, as a deterministic training run does.
"""
from __future__ import annotations

import hashlib
import itertools
import math
import random
import re
from dataclasses import dataclass, field

from mutations.diff import structural_diff
from mutations.knobs import extract_knobs
from mutations.sources._base import Expectation, MutationSource, NoProposal, Proposal, ProposalRequest
from search.executors import EvalJob, Executor, Running, Slot
from trainer.budget import Budget, BudgetUnit
from trainer.result import EvalResult, Status

FULL_BUDGET = "300k"
FLOPS_PER_TOKEN = 5e6  # training FLOPs per token of a model of about 0.8M parameters: what a FLOP limit counts
_FEATURE = re.compile(r"def (feature_\d+)\(\):\n    return (True|False)\n")


@dataclass(frozen=True)
class KnobTruth:
    default: float
    optimum: float
    curvature: float   # penalty per unit squared distance (in log space when log)
    log: bool
    comment: str       # the knob's range, as the stand-in declares it


KNOBS = {
    "LEARNING_RATE": KnobTruth(1e-3, 2.5e-3, 0.08, True, "log[1e-4, 1e-2]"),
    "WARMUP_FRACTION": KnobTruth(0.1, 0.03, 2.0, False, "float[0, 0.3]"),
    "WEIGHT_DECAY": KnobTruth(0.1, 0.1, 0.02, True, "log[1e-3, 1]"),
    "BETA2": KnobTruth(0.95, 0.98, 4.0, False, "float[0.9, 0.999]"),
}


@dataclass(frozen=True)
class SyntheticTask:
    effects: tuple[float, ...]          # per feature, at the full budget (negative = better)
    horizon: tuple[float, ...]          # per feature: added to its effect at fraction b, times (1 - b)
    redundant: tuple[int, int]          # two good features; together they give back part of their gain
    redundancy: float                   # the penalty when both are on
    noise: float                        # sd of the per-variant noise at the full budget
    seed_noise: float = 0.01            # sd of the per-seed component shared by every variant
    base: float = 3.667
    task: int = 0                       # which task: every draw of noise depends on it, so tasks are independent

    @property
    def features(self) -> int:
        return len(self.effects)

    def score(self, on: frozenset[int], knobs: dict[str, float], fraction: float = 1.0) -> float:
        """The noise-free val_bpb of a phenotype at a fraction of the budget."""
        value = self.base + 1.0 * (1 - fraction)  # shorter runs end higher, for every variant alike
        value += sum(self.effects[i] + self.horizon[i] * (1 - fraction) for i in on)
        if set(self.redundant) <= on:
            value += self.redundancy
        for name, truth in KNOBS.items():
            x = knobs.get(name, truth.default)
            distance = math.log(x / truth.optimum) if truth.log else x - truth.optimum
            value += truth.curvature * distance**2
        return value

    def observed(self, source: str, fraction: float, seed: int, split: str) -> float:
        on, knobs = phenotype(source)
        shared = _normal(("seed", self.task, seed, round(fraction, 4), split)) * self.seed_noise
        own = _normal(("own", self.task, sorted(on), sorted(knobs.items()), seed, round(fraction, 4), split)) * self.noise
        return self.score(on, knobs, fraction) + (shared + own) / math.sqrt(fraction)

    def best_features(self) -> frozenset[int]:
        """The features of the best reachable phenotype (brute force over the helpful ones)."""
        helpful = [i for i, e in enumerate(self.effects) if e < 0]
        subsets = (frozenset(c) for k in range(len(helpful) + 1) for c in itertools.combinations(helpful, k))
        return min(subsets, key=lambda on: self.score(on, {}))

    def good(self) -> frozenset[int]:
        """The truly good moves: in the best phenotype and worth more than 0.01 val_bpb alone."""
        return frozenset(i for i in self.best_features() if self.effects[i] <= -0.01)

    def optimum(self) -> float:
        return self.score(self.best_features(), {name: truth.optimum for name, truth in KNOBS.items()})

    def marginal(self, on: frozenset[int], knobs: dict[str, float], change: str) -> float:
        """True full-budget effect of one kept change in context: positive means it hurts."""
        if change.startswith("feature_"):
            index = int(change.split("_")[1])
            return self.score(on, knobs) - self.score(on - {index}, knobs)
        reset = {**knobs, change: KNOBS[change].default}
        return self.score(on, knobs) - self.score(on, reset)


def make_task(seed: int = 0, features: int = 16, noise: float = 0.006) -> SyntheticTask:
    """A task with 4 good features, 1 fast starter that hurts at the full budget, 4 bad ones and
    the rest within the noise, in a random order. The two best are slow starters: at 1/4 of the
    budget they show a sixth of their effect, at 1/9 none (RoPE and Muon on the CPU baseline)."""
    rng = random.Random(seed)
    jitter = lambda x: x * rng.uniform(0.7, 1.3)  # noqa: E731
    good = [jitter(e) for e in (-0.20, -0.10, -0.05, -0.03)]
    roles = ([(e, 1.1 * abs(e)) for e in good[:2]] + [(e, 0.0) for e in good[2:]]
             + [(jitter(0.02), -0.16)]
             + [(jitter(e), 0.0) for e in (0.03, 0.08, 0.15, 0.3)])
    roles += [(rng.gauss(0, 0.003), 0.0) for _ in range(features - len(roles))]
    order = list(range(features))
    rng.shuffle(order)
    effects, horizon = [0.0] * features, [0.0] * features
    for slot, (effect, bias) in zip(order, roles):
        effects[slot], horizon[slot] = effect, bias
    pair = (order[0], order[2])  # the best feature and a smaller good one overlap
    return SyntheticTask(tuple(effects), tuple(horizon), pair, 0.6 * abs(good[2]), noise, task=seed)


def standin_source(task: SyntheticTask) -> str:
    knobs = "\n".join(f"{name} = {truth.default!r}  # knob: {truth.comment}" for name, truth in KNOBS.items())
    features = "\n\n\n".join(f"def feature_{i:02d}():\n    return False\n" for i in range(task.features))
    return f'''"""A synthetic stand-in for train.py: its score is a hidden function of its knobs and features."""
from trainer import runtime

{knobs}
BATCH_SIZE = 16  # knob: fixed


{features}

while runtime.keep_training():
    runtime.next_batch(BATCH_SIZE)
    runtime.step(None, 0.0)
runtime.finish(None)
'''


def phenotype(source: str) -> tuple[frozenset[int], dict[str, float]]:
    """Which features a stand-in has switched on, and its knob values."""
    on = frozenset(int(name.split("_")[1]) for name, value in _FEATURE.findall(source) if value == "True")
    knobs = {k.name: k.default for k in extract_knobs(source, device="cpu") if k.name in KNOBS}
    return on, knobs


def switch_on(source: str, feature: str) -> str:
    """The move `feature_k`: switch that feature on; ValueError if it is on already or absent."""
    off = f"def {feature}():\n    return False\n"
    if off not in source:
        raise ValueError(f"{feature} is already on, or not in this source")
    return source.replace(off, f"def {feature}():\n    return True\n")


def _normal(key: tuple) -> float:
    digest = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big")).gauss(0.0, 1.0)


class SyntheticSource(MutationSource):
    """The catalog's behaviour on the stand-in: a feature not yet on and not yet tried, at random. With
    `guess_sd`, each proposal states an expected effect: the truth plus that much noise (an LLM's guess)."""

    name = "synthetic"
    exhaustive = True

    def __init__(self, task: SyntheticTask, seed: int = 0, guess_sd: float | None = None) -> None:
        self.task, self._random, self.guess_sd = task, random.Random(seed), guess_sd

    def propose(self, request: ProposalRequest) -> Proposal:
        order = [f"feature_{i:02d}" for i in range(self.task.features)]
        self._random.shuffle(order)
        for feature in order:
            if f"synthetic:{feature}" in request.exclude:
                continue
            try:
                changed = switch_on(request.parent_source, feature)
            except ValueError:
                continue
            mutation = structural_diff(request.parent_source, changed, name=f"synthetic:{feature}")
            if mutation.key not in request.tried:
                return Proposal(mutation, rationale=f"switch {feature} on", expectation=self._guess(feature))
        raise NoProposal("every feature is on or has been tried on this parent")

    def _guess(self, feature: str) -> Expectation | None:
        if self.guess_sd is None:
            return None
        truth = self.task.effects[int(feature.split("_")[1])]
        return Expectation(truth + _normal(("guess", self.task.task, feature)) * self.guess_sd, self.guess_sd)


@dataclass
class SyntheticExecutor(Executor):
    """Scores each job from the hidden function when it is submitted; the job holds its slot until the driver
    collects it (wait), so the driver sees real free slots and proposes only as results come back."""

    task: SyntheticTask
    full_budget: str = FULL_BUDGET
    workers: int = 2
    _done: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.slots = [Slot("cpu", 1) for _ in range(self.workers)]
        self._full = Budget.parse(self.full_budget).amount

    def free_slots(self) -> int:
        return len(self.slots) - len(self._done)

    def submit(self, job: EvalJob) -> None:
        budget = job.spec.budget
        fraction = min(1.0, budget.amount / self._full)
        value = self.task.observed(job.source, fraction, job.spec.seed, job.spec.split)
        tokens = budget.amount if budget.unit is BudgetUnit.TOKENS else budget.amount / FLOPS_PER_TOKEN
        self._done.append((job, EvalResult(
            status=Status.OK, val_bpb=value, steps=1, tokens=int(tokens), flops=tokens * FLOPS_PER_TOKEN,
            training_seconds=1.0,
            wall_seconds=1.0, device="cpu", budget=str(budget), budget_unit=budget.unit.value, seed=job.spec.seed,
            split=job.spec.split, isolation="synthetic")))

    def running(self) -> list[Running]:
        return []

    def wait(self, timeout: float) -> list[tuple[EvalJob, EvalResult]]:
        done, self._done = self._done, []
        return done

    def stop(self) -> None:
        self._done = []

    def close(self) -> None:
        pass
