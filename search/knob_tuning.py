"""Optuna knob tuning: one study per variant, asked and told by the driver.

Each study is named after its variant's hash and lives in the run's database, so
`optuna-dashboard <url>` shows it. Its space is a neighbourhood of the variant's current
knob values (a factor of 3 for log-scaled knobs, a quarter of the range for linear ones,
two steps for sizes): a search with a handful of trials per variant does better as a local
search around values that already work than sampling 15 knobs over their whole ranges.
Boolean and text knobs are left out: they switch code paths, which is the mutators' job.
Each trial moves a few knobs (at most KNOBS_PER_TRIAL) and keeps the rest: with so few trials,
changing all 15 at once mostly lands somewhere worse.
The variant's own values are enqueued first, so the study's first trial is the parent.
Rung results are reported as intermediate values; losers are told PRUNED, finishers COMPLETE.
"""
from __future__ import annotations

import math
import random

import optuna
from optuna.distributions import BaseDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from mutations.knobs import Knob, extract_knobs, set_knobs
from trainer.errors import UserError

_LOG_FACTOR = 3.0
_LINEAR_SHARE = 0.25
_INT_STEPS = 2
KNOBS_PER_TRIAL = 3


def study_name(variant_id: str) -> str:
    return f"knobs-{variant_id}"


def local_space(knobs: list[Knob]) -> dict[str, BaseDistribution]:
    """The Optuna space around each tunable knob's current value."""
    space = {}
    for knob in knobs:
        d, value = knob.distribution, knob.default
        if d.kind == "log" and value > 0:
            low, high = max(d.low, value / _LOG_FACTOR), min(d.high, value * _LOG_FACTOR)
            if low < high:
                space[knob.name] = FloatDistribution(low, high, log=True)
        elif d.kind == "float":
            width = _LINEAR_SHARE * (d.high - d.low)
            low, high = max(d.low, value - width), min(d.high, value + width)
            if low < high:
                space[knob.name] = FloatDistribution(low, high)
        elif d.kind == "int" and not isinstance(value, bool):
            step = d.step or 1
            low, high = max(d.low, value - _INT_STEPS * step), min(d.high, value + _INT_STEPS * step)
            low = value - (value - low) // step * step  # stay on the knob's grid through its current value
            high = value + (high - value) // step * step
            if low < high:
                space[knob.name] = IntDistribution(low, high, step=step)
    return space


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=4, multivariate=True)


class KnobTuner:
    """The driver's side of the studies: ask a child's knob values, report and tell its rungs."""

    def __init__(self, storage_url: str, sampler: str = "tpe", seed: int = 0, device: str = "cpu") -> None:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._storage = optuna.storages.RDBStorage(storage_url)
        self._sampler, self._seed, self._device = sampler, seed, device

    def study(self, variant_id: str, source: str) -> optuna.Study:
        name = study_name(variant_id)
        existing = {s.study_name for s in optuna.get_all_study_summaries(self._storage)}
        study = optuna.create_study(study_name=name, storage=self._storage, direction="minimize",
                                    sampler=make_sampler(self._sampler, self._seed), load_if_exists=True)
        if name not in existing:
            space = local_space(extract_knobs(source, self._device))
            study.set_user_attr("space", {k: optuna.distributions.distribution_to_json(d) for k, d in space.items()})
            study.enqueue_trial({k.name: k.default for k in extract_knobs(source, self._device) if k.name in space})
        return study

    def ask(self, variant_id: str, source: str, attempts: int = 5) -> tuple[int, str, dict] | None:
        """(trial id, child source, values) of a new trial on this variant's study; None when the
        variant has no tunable knobs or the sampler keeps proposing values the script refuses."""
        study = self.study(variant_id, source)
        space = {k: optuna.distributions.json_to_distribution(v) for k, v in study.user_attrs["space"].items()}
        if not space:
            return None
        for _ in range(attempts):
            chosen = random.Random(f"{self._seed}:{variant_id}:{len(study.trials)}").sample(
                sorted(space), min(KNOBS_PER_TRIAL, len(space)))
            trial = study.ask(fixed_distributions=_first_trial_space(study, space) or {k: space[k] for k in chosen})
            try:
                child = set_knobs(source, trial.params, device=self._device)
            except UserError as error:  # e.g. HEADS no longer divides WIDTH
                trial.set_user_attr("refused", str(error))
                study.tell(trial, state=TrialState.FAIL)
                continue
            return trial._trial_id, child, dict(trial.params)
        return None

    def report(self, trial_id: int, rung: int, value: float) -> None:
        if math.isfinite(value) and self._state(trial_id) is TrialState.RUNNING:
            self._storage.set_trial_intermediate_value(trial_id, rung, value)

    def tell(self, trial_id: int, state: TrialState, value: float | None = None) -> None:
        """Finish a trial once; a trial already finished (a resumed search re-telling it) is left alone."""
        if self._state(trial_id) is not TrialState.RUNNING:
            return
        values = [value] if state is TrialState.COMPLETE else None
        self._storage.set_trial_state_values(trial_id, state, values)

    def _state(self, trial_id: int) -> TrialState:
        return self._storage.get_trial(trial_id).state


def _first_trial_space(study: optuna.Study, space: dict) -> dict | None:
    """The enqueued first trial (the variant's own values) sets every knob in the space."""
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    return space if waiting else None
