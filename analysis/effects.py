"""The measured effects: ablation of the final stack, its total vs the sum of its parts, the held-out
test, and how well low rungs predict high ones. Everything is recomputed from the evaluations.

The combine step (search/combine.py) stores which variants it built for the ablation
(meta "result"["ablation"]: each member's `alone` and `without` variant ids); the numbers
here come from those variants' evaluations at the top rung's budget on every seed they share
(the top rung's seeds, plus those `search ablate --seeds N` adds), paired per seed, so they
can be checked by hand from `Run.evaluations`.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd

from analysis.tables import Scores, frame
from population.stats import Paired, mean_ci, paired, rank_correlation
from population.ladder import Ladder

_EMPTY = {"mean": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": 0}


def ablation(members: list[dict], scores: Scores, ladder: Ladder, baseline: str, stack: str) -> pd.DataFrame:
    """One row per stack member (meta "result"["ablation"] rows): add-one, leave-one-out and interaction."""
    top = ladder.top
    base, whole = scores.get(baseline, top.label), scores.get(stack, top.label)
    rows = []
    for member in members:
        alone = scores.get(member["alone"], top.label)
        without = scores.get(member["without"], top.label) if member["without"] else {}
        model = member.get("model") or {}
        rows.append({"atom": member["atom"], "description": member.get("description", ""),
                     "bundled": bool(member.get("bundled", False)), "estimate": _number(member.get("estimate")),
                     "alone": member["alone"], "without": member["without"],
                     **_prefixed("add_one", _stats(paired(alone, base))),
                     **_prefixed("leave_one_out", _stats(paired(whole, without))),
                     **_prefixed("interaction", interaction(alone, base, whole, without)),
                     "model_add_one": _number((model.get("add_one") or {}).get("mean")),
                     "model_leave_one_out": _number((model.get("leave_one_out") or {}).get("mean")),
                     "model_leave_one_out_sd": _number((model.get("leave_one_out") or {}).get("sd")),
                     "model_p_helps": _number(model.get("p_helps"))})
    counts = {f"{name}_n": "int64" for name in ("add_one", "leave_one_out", "interaction")}
    return frame("ablation", rows, bundled="bool", estimate="float64", **counts)


def _number(value: float | None) -> float:
    return math.nan if value is None else float(value)


def interaction(alone: Mapping[int, float], base: Mapping[int, float], stack: Mapping[int, float],
                without: Mapping[int, float]) -> dict:
    """Per seed all four share, (stack - without) - (alone - baseline): what the atom does inside the stack
    beyond what it does alone. Its mean, 95% interval and n."""
    seeds = sorted(set(alone) & set(base) & set(stack) & set(without))
    if not seeds:
        return dict(_EMPTY)
    values = [(stack[s] - without[s]) - (alone[s] - base[s]) for s in seeds]
    mean, low, high = mean_ci(values)
    return {"mean": mean, "ci_low": low, "ci_high": high, "n": len(seeds)}


def stack_total(ablation: pd.DataFrame, scores: Scores, ladder: Ladder, baseline: str, stack: str) -> dict:
    """The stack's measured delta vs the baseline beside the sum of its members' add-one and leave-one-out
    deltas: additivity is reported, not assumed."""
    top = ladder.top
    total = paired(scores.get(stack, top.label), scores.get(baseline, top.label))
    values = _stats(total)
    sum_add_one = float(ablation["add_one_mean"].sum())
    return {"stack": stack, "members": len(ablation), "total": values["mean"], "total_ci_low": values["ci_low"],
            "total_ci_high": values["ci_high"], "total_n": values["n"],
            "total_p_better": total.p_better if total else math.nan, "sum_add_one": sum_add_one,
            "sum_leave_one_out": float(ablation["leave_one_out_mean"].sum()),
            "interaction": values["mean"] - sum_add_one}


def held_out(scores: Scores, ladder: Ladder, baseline: str, stack: str | None) -> tuple[pd.DataFrame, Paired | None]:
    """The held-out test: per-seed rows and their paired comparison (None without a stack or shared seeds)."""
    if stack is None or stack == baseline:
        return frame("test", []), None
    budget = ladder.top.label
    mine, theirs = scores.get(stack, budget, split="test"), scores.get(baseline, budget, split="test")
    rows = [{"seed": s, "stack_val_bpb": mine[s], "baseline_val_bpb": theirs[s], "delta": mine[s] - theirs[s]}
            for s in sorted(set(mine) & set(theirs))]
    return frame("test", rows), paired(mine, theirs)


def fidelity_points(variant_ids: list[str], scores: Scores, ladder: Ladder) -> pd.DataFrame:
    """Per consecutive rung pair, each variant's mean at both rungs (only variants that finished every seed)."""
    rows = []
    for low, high in zip(ladder.rungs, ladder.rungs[1:]):
        for variant in variant_ids:
            a, b = scores.mean(variant, low.label, low.seeds), scores.mean(variant, high.label, high.seeds)
            if a is not None and b is not None:
                rows.append({"variant": variant, "low": low.label, "high": high.label, "low_val_bpb": a,
                             "high_val_bpb": b})
    return frame("fidelity_points", rows)


def fidelity(points: pd.DataFrame, ladder: Ladder) -> pd.DataFrame:
    rows = []
    for low, high in zip(ladder.rungs, ladder.rungs[1:]):
        pair = points[(points["low"] == low.label) & (points["high"] == high.label)]
        correlation = rank_correlation(pair["low_val_bpb"].tolist(), pair["high_val_bpb"].tolist())
        spearman, kendall = correlation if correlation else (math.nan, math.nan)
        rows.append({"low": low.label, "high": high.label, "n": len(pair), "spearman": spearman, "kendall": kendall})
    return frame("fidelity", rows, n="int64", spearman="float64", kendall="float64")


def _stats(comparison: Paired | None) -> dict:
    if comparison is None:
        return dict(_EMPTY)
    return {"mean": comparison.mean, "ci_low": comparison.ci_low, "ci_high": comparison.ci_high, "n": comparison.n}


def _prefixed(prefix: str, values: dict) -> dict:
    return {f"{prefix}_{key}": value for key, value in values.items()}
