"""What a run spent, and what its Optuna studies learned: compute per purpose, LLM tokens and dollars,
knob importance.

LLM usage is summed from the run's `llm.jsonl` (one JSON line per call, written by
mutations.sources.recording.Recorder: "usage" holds the token counts, "cost_usd" the price).
"""
from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path

import pandas as pd

from analysis.tables import frame
from trainer.errors import UserError
from trainer.result import Status

LLM_RECORD = "llm.jsonl"
USAGE_FIELDS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
_STUDY_PREFIX = "knobs-"
_FAILED = {s.value for s in Status if s.is_failure()}


def cost(evaluations: pd.DataFrame) -> pd.DataFrame:
    """Evaluations, failures and seconds per purpose, in the order smoke, rung 0.., recheck, test, other."""
    rows = []
    for purpose, group in evaluations.groupby("purpose", sort=False):
        rows.append({"purpose": purpose, "evaluations": len(group), "failed": int(group["status"].isin(_FAILED).sum()),
                     "compute_seconds": float(group["wall_seconds"].sum()),
                     "training_seconds": float(group["training_seconds"].sum())})
    rows.sort(key=lambda row: _purpose_order(row["purpose"]))
    return frame("cost", rows, evaluations="int64", failed="int64", compute_seconds="float64",
                 training_seconds="float64")


def _purpose_order(purpose: str) -> tuple[int, int]:
    rung = re.fullmatch(r"rung (\d+)", purpose)
    if rung:
        return 1, int(rung.group(1))
    return {"smoke": (0, 0), "noise": (0, 1), "recheck": (2, 0), "stack": (3, 0), "stack tune": (3, 1),
            "ablation": (3, 2), "test": (4, 0)}.get(purpose, (5, 0))


def llm_usage(run_dir: Path | None) -> dict:
    """calls, token counts (USAGE_FIELDS) and cost_usd summed over llm.jsonl; zeros when there is none."""
    totals = {"calls": 0, **{name: 0 for name in USAGE_FIELDS}, "cost_usd": 0.0}
    path = None if run_dir is None else Path(run_dir) / LLM_RECORD
    if path is None or not path.is_file():
        return totals
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise UserError(f"{path} line {number} is not JSON ({error.msg}); the LLM recording is damaged") from None
        totals["calls"] += 1
        usage = record.get("usage") or {}
        for name in USAGE_FIELDS:
            totals[name] += int(usage.get(name) or 0)
        totals["cost_usd"] += float(record.get("cost_usd") or 0.0)
    return totals


def knob_importance(storage_url: str) -> pd.DataFrame:
    """Importance per knob of every knobs-VARIANT study with at least two complete trials, by optuna's
    default evaluator (PED-ANOVA: no scikit-learn needed, and it takes the knobs a trial left alone
    as conditional parameters rather than dropping them)."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(storage_url)
    rows = []
    for name in sorted(optuna.get_all_study_names(storage)):
        if not name.startswith(_STUDY_PREFIX):
            continue
        study = optuna.load_study(study_name=name, storage=storage)
        complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        if complete < 2:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # optuna's ExperimentalWarning and the like
                importances = optuna.importance.get_param_importances(study)
        except (ValueError, RuntimeError):  # e.g. no knob set by every complete trial
            continue
        rows += [{"study": name, "variant": name[len(_STUDY_PREFIX):], "param": param,
                  "importance": value if math.isfinite(value) else math.nan, "n_trials": complete}
                 for param, value in importances.items()]
    return frame("knob_importance", rows, importance="float64", n_trials="int64")
