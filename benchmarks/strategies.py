"""Search strategies compared by benchmarks/search_efficiency.py, on one problem and one compute budget.

A Problem is a baseline source, named moves that rewrite a source, and a way to evaluate
(source, budget, seed, split) jobs: the real sandboxed runner, or the synthetic task's hidden
function. Every strategy spends at most the same number of training tokens and returns an
Outcome: its final source, and for each change it kept, the final source without that change
(the leave-one-out that tells whether the change still helps on fresh seeds).

- `greedy`: autoresearch's loop. Ideas in random order, one run each at the full budget on
  the fixed seed, kept if val_bpb is lower than the best so far.
- `random_stacks`: random subsets of the moves merged into one source, one run each; the
  best run wins.
- `optuna_knobs`: TPE over the baseline's own knobs (full ranges), one run per trial; no
  code changes.
- `evolve`: `search evolve` itself, read back from its store.
"""
from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna

from mutations.knobs import extract_knobs, set_knobs
from population.store import Store
from trainer.budget import Budget
from trainer.errors import UserError

Move = Callable[[str], str]  # raises (NotApplicable, ValueError, ...) when it does not apply


@dataclass(frozen=True)
class Job:
    source: str
    budget: str
    seed: int
    split: str = "val"


@dataclass
class Problem:
    baseline: str
    moves: dict[str, Move]
    budget: str                                              # the full budget, e.g. "300k"
    run_jobs: Callable[[list[Job]], list[float | None]]      # val_bpb per job; None for a failed run
    device: str = "cpu"
    tokens_used: int = 0
    evaluations: int = 0

    def evaluate(self, source: str, seed: int = 0, split: str = "val") -> float | None:
        return self.evaluate_all([Job(source, self.budget, seed, split)])[0]

    def evaluate_all(self, jobs: list[Job]) -> list[float | None]:
        self.tokens_used += sum(int(Budget.parse(job.budget).amount) for job in jobs)
        self.evaluations += len(jobs)
        return self.run_jobs(jobs)

    @property
    def run_tokens(self) -> int:
        return int(Budget.parse(self.budget).amount)


@dataclass
class Outcome:
    strategy: str
    source: str
    kept: dict[str, str | None] = field(default_factory=dict)  # change -> final source without it (None: cannot)
    tokens: int = 0
    evaluations: int = 0


def _apply_all(problem: Problem, names: list[str]) -> tuple[str, list[str]]:
    """The baseline with each named move applied in order; moves that do not apply are skipped."""
    source, applied = problem.baseline, []
    for name in names:
        try:
            source = problem.moves[name](source)
        except Exception:  # a move that does not apply here (or conflicts with an earlier one)
            continue
        applied.append(name)
    return source, applied


def _leave_one_out(problem: Problem, kept: list[str]) -> dict[str, str | None]:
    without = {}
    for name in kept:
        source, applied = _apply_all(problem, [other for other in kept if other != name])
        without[name] = source if len(applied) == len(kept) - 1 else None
    return without


def _spent(problem: Problem, start: int, tokens: int) -> bool:
    """Whether one more full-budget run would go over this strategy's share."""
    return problem.tokens_used - start + problem.run_tokens > tokens


def greedy(problem: Problem, tokens: int, seed: int = 0) -> Outcome:
    start, start_evals = problem.tokens_used, problem.evaluations
    rng = random.Random(seed)
    kept: list[str] = []
    current = problem.baseline
    best = problem.evaluate(current)
    changed = True
    while changed and not _spent(problem, start, tokens):
        changed = False  # another pass over the ideas only if the last one kept something
        ideas = [name for name in problem.moves if name not in kept]
        rng.shuffle(ideas)
        for name in ideas:
            if _spent(problem, start, tokens):
                break
            try:
                candidate = problem.moves[name](current)
            except Exception:
                continue
            value = problem.evaluate(candidate)
            if value is not None and (best is None or value < best):
                current, best, changed = candidate, value, True
                kept.append(name)
    return Outcome("greedy", current, _leave_one_out(problem, kept), problem.tokens_used - start,
                   problem.evaluations - start_evals)


def random_stacks(problem: Problem, tokens: int, seed: int = 0, most: int = 6) -> Outcome:
    start, start_evals = problem.tokens_used, problem.evaluations
    rng = random.Random(seed)
    best_value, best_names, seen = problem.evaluate(problem.baseline), [], {problem.baseline}
    names = list(problem.moves)
    attempts = 0
    while not _spent(problem, start, tokens) and attempts < 100 * len(names):
        attempts += 1
        order = rng.sample(names, rng.randint(1, min(most, len(names))))
        source, applied = _apply_all(problem, order)
        if source in seen:
            continue
        seen.add(source)
        value = problem.evaluate(source)
        if value is not None and (best_value is None or value < best_value):
            best_value, best_names = value, applied
    source, applied = _apply_all(problem, best_names)
    return Outcome("random", source, _leave_one_out(problem, applied), problem.tokens_used - start,
                   problem.evaluations - start_evals)


def optuna_knobs(problem: Problem, tokens: int, seed: int = 0) -> Outcome:
    start, start_evals = problem.tokens_used, problem.evaluations
    knobs = [k for k in extract_knobs(problem.baseline, device=problem.device) if k.distribution.kind != "fixed"]
    defaults = {k.name: k.default for k in knobs}
    space = {k.name: k.distribution.to_optuna() for k in knobs}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed, multivariate=True))
    study.enqueue_trial(defaults)
    while not _spent(problem, start, tokens):
        trial = study.ask(space)
        try:
            source = set_knobs(problem.baseline, trial.params, device=problem.device)
        except (ValueError, UserError):  # a combination the knobs' constraints refuse (HEADS must divide WIDTH)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        value = problem.evaluate(source)
        if value is None:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, value)
    best = study.best_trial.params if study.best_trials else defaults
    changed = {name: value for name, value in best.items() if value != defaults[name]}
    source = set_knobs(problem.baseline, changed, device=problem.device)
    kept = {name: _reset(source, name, defaults[name], problem.device) for name in changed}
    return Outcome("optuna", source, kept, problem.tokens_used - start, problem.evaluations - start_evals)


def _reset(source: str, knob: str, default: object, device: str) -> str | None:
    """The source with one knob back at its default; None when that breaks a constraint between knobs."""
    try:
        return set_knobs(source, {knob: default}, device=device)
    except (ValueError, UserError):
        return None


def evolve_outcome(run_dir: Path) -> Outcome:
    """What a finished `search evolve` kept: its stack, and the ablation's stack-without-each-member."""
    store = Store.in_run_dir(run_dir)
    try:
        meta = store.meta()
        result = meta["result"]
        variants = {v.id: v for v in store.variants()}
        kept = {row["atom"]: variants[row["without"]].source if row["without"] else None
                for row in result["ablation"]}
        spent = [e for e in store.evaluations() if e.purpose != "test"]
        tokens = sum(e.result.tokens if e.result else 0 for e in spent)
        return Outcome("evolve", variants[result["stack"]].source, kept, tokens, len(spent))
    finally:
        store.close()


# The strategies evolve is compared with, by the name their outcomes carry.
COMPARED = {"greedy": greedy, "random": random_stacks, "optuna": optuna_knobs}
