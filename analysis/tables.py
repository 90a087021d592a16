"""The store's records as frames: evaluations, variants, lineage and decisions.

Pure functions of the store's records (population.store) and the run's ladder, so they can
be tested on a store filled by hand. The columns are analysis.columns.COLUMNS; see there
for what each means.
"""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence

import pandas as pd

from analysis.columns import COLUMNS
from population.stats import Paired, paired
from population.store import Decision, Evaluation, Variant
from population.ladder import SMOKE_BUDGET as SMOKE
from population.ladder import Ladder
from trainer.budget import Budget
from trainer.errors import UserError
from trainer.result import EvalResult, Status

SMOKE_BUDGET = str(SMOKE)
_MEMBERSHIP = ("accepted", "retired", "dropped")
_FLOATS = ("training_seconds", "wall_seconds", "overhead_seconds", "tokens_per_second", "peak_memory_mb", "cpu_seconds",
           "flops")


class Scores:
    """seed -> val_bpb of the successful evaluations, by variant, budget (as written) and split."""

    def __init__(self, evaluations: Iterable[Evaluation]) -> None:
        self._found: dict[tuple[str, str, str], dict[int, float]] = defaultdict(dict)
        for e in evaluations:
            if e.status == Status.OK.value and e.val_bpb is not None:
                self._found[(e.variant_id, e.budget, e.split)][e.seed] = e.val_bpb

    def get(self, variant: str, budget: str, seeds: Iterable[int] | None = None,
            split: str = "val") -> dict[int, float]:
        """seed -> val_bpb, on these seeds only when given."""
        found = self._found.get((variant, budget, split), {})
        return dict(found) if seeds is None else {s: found[s] for s in seeds if s in found}

    def mean(self, variant: str, budget: str, seeds: Sequence[int]) -> float | None:
        """Mean over these seeds when the variant finished every one of them, else None."""
        found = self.get(variant, budget, seeds)
        return sum(found.values()) / len(found) if found and len(found) == len(seeds) else None


def frame(table: str, rows: list[dict], **dtypes: str) -> pd.DataFrame:
    """A table with exactly its documented columns, in order, even when there are no rows."""
    data = pd.DataFrame(rows, columns=list(COLUMNS[table]))
    return data.astype(dtypes) if dtypes else data


def times(seconds: pd.Series) -> pd.Series:
    return pd.to_datetime(seconds, unit="s", utc=True)


def purpose(budget: str, seed: int, split: str, ladder: Ladder, stored: str = "") -> tuple[str, int | None]:
    """(purpose, rung) of an evaluation: as the search recorded it, or else told apart by budget, seed and split."""
    rung = ladder.rung_of(budget)
    if stored:
        return stored, rung.index if rung else None
    if split == "test":
        return "test", None
    if budget == SMOKE_BUDGET:
        return "smoke", None
    rung = ladder.rung_of(budget)
    if rung is None:
        return "other", None
    return (f"rung {rung.index}" if seed in rung.seeds else "recheck"), rung.index


def evaluations(records: list[Evaluation], variants: dict[str, Variant], ladder: Ladder) -> pd.DataFrame:
    rows = []
    for e in records:
        budget = _budget(e.budget)
        kind, rung = purpose(e.budget, e.seed, e.split, ladder, e.purpose)
        rows.append({"id": e.id, "variant": e.variant_id, "origin": variants[e.variant_id].origin, "budget": e.budget,
                     "budget_unit": budget.unit.value if budget else "",
                     "budget_amount": budget.amount if budget else math.nan, "seed": e.seed, "split": e.split,
                     "purpose": kind, "rung": rung, "status": e.status, "val_bpb": e.val_bpb,
                     **_measured(e.result), "started": e.started, "finished": e.finished, "log_path": e.log_path})
    data = frame("evaluations", rows, rung="Int64", steps="Int64", tokens="Int64", val_bpb="float64",
                 budget_amount="float64")
    data["started"], data["finished"] = times(data["started"]), times(data["finished"])
    return data


def _measured(result: EvalResult | None) -> dict:
    """What the runner measured; missing while an evaluation is running."""
    if result is None:
        return {"message": "", "steps": None, "tokens": None, "trusted": None, "isolation": "",
                **{name: math.nan for name in _FLOATS}}
    return {"message": result.message, "steps": result.steps, "tokens": result.tokens, "trusted": result.trusted,
            "isolation": result.isolation, **{name: getattr(result, name) for name in _FLOATS}}


def variants(records: list[Variant], decisions: list[Decision], evaluations: pd.DataFrame, scores: Scores,
             ladder: Ladder, baseline: str) -> pd.DataFrame:
    last: dict[str, str] = {}
    member: dict[str, str] = {}
    for d in decisions:
        last[d.variant_id] = d.kind
        if d.kind in _MEMBERSHIP:
            member[d.variant_id] = d.kind
    counts = evaluations["variant"].value_counts()
    compute = evaluations.groupby("variant")["wall_seconds"].sum()
    top = ladder.top
    reference = scores.get(baseline, top.label, top.seeds)
    rows = []
    for v in records:
        mutation = v.mutation or {}
        mine = scores.get(v.id, top.label, top.seeds)
        rows.append({
            "id": v.id, "origin": v.origin, "mutation": mutation.get("name", ""),
            "description": mutation.get("description", ""), "parents": list(v.parents),
            "reference": v.parents[0] if v.parents else None, "created": v.created, "state": last.get(v.id, "pending"),
            "in_population": member.get(v.id) == "accepted",
            "top_val_bpb": sum(mine.values()) / len(mine) if mine else math.nan,
            **_comparison(paired(mine, reference), delta="delta"),
            "evaluations": int(counts.get(v.id, 0)), "compute_seconds": float(compute.get(v.id, 0.0))})
    data = frame("variants", rows, n="Int64", in_population="bool")
    data["created"] = times(data["created"])
    return data


def lineage(records: list[Variant]) -> pd.DataFrame:
    rows = [{"child": v.id, "parent": parent, "role": "parent" if i == 0 else "merged", "origin": v.origin,
             "mutation": (v.mutation or {}).get("name", "")}
            for v in records for i, parent in enumerate(v.parents)]
    return frame("lineage", rows)


def decisions(records: list[Decision]) -> pd.DataFrame:
    rows = []
    for d in records:
        stored = d.detail.get("paired")
        rows.append({"variant": d.variant_id, "kind": d.kind, "rung": d.rung, "reference": d.reference,
                     **_comparison(None if stored is None else Paired.from_dict(stored)),
                     "reason": d.detail.get("reason", ""), "time": d.time, "detail": d.detail})
    data = frame("decisions", rows, rung="Int64", n="Int64", mean="float64")
    data["time"] = times(data["time"])
    return data


def _comparison(comparison: Paired | None, delta: str = "mean") -> dict:
    if comparison is None:
        return {delta: math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": None, "p_better": math.nan}
    return {delta: comparison.mean, "ci_low": comparison.ci_low, "ci_high": comparison.ci_high, "n": comparison.n,
            "p_better": comparison.p_better}


def _budget(text: str) -> Budget | None:
    try:
        return Budget.parse(text)
    except UserError:  # a budget this version cannot read still gets its row
        return None
