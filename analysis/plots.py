"""The report's figures, drawn with matplotlib from a Run's tables.

Each function returns a Figure, or None when the run has nothing to draw yet, so the report
can say so instead of showing an empty plot. Figures are made with matplotlib.figure.Figure
rather than pyplot: no global state and no display, so they render the same in a CLI, a
notebook or a server. Colours are shared: the baseline grey, accepted variants green, the
final stack gold, everything else blue (lower rungs paler).
"""
from __future__ import annotations

import math
import textwrap
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from analysis.run import Run

BASELINE, ACCEPTED, STACK, OTHER, MERGED = "#6b6b6b", "#2a9d3a", "#d99a00", "#3b6fb6", "#8a5cc2"
_FILL = {BASELINE: "#d9d9d9", ACCEPTED: "#c6ebcb", STACK: "#ffe08a", OTHER: "#ffffff"}  # lineage boxes: pale
MAX_STUDIES = 6        # knob-importance panels; the rest are in run.knob_importance
MAX_KNOBS = 10         # bars per study, the most important first
_OUTLIER_SPREAD = 1.0  # y-axes stop this many inter-decile ranges past the 90th percentile


def final_stack(run: Run) -> str | None:
    """The final stack's id; None before the combine step or when nothing beat the baseline."""
    return None if run.stack_id == run.baseline_id else run.stack_id


def accepted(run: Run) -> set[str]:
    """Variants the search accepted into the population at some point (the baseline left out)."""
    d = run.decisions
    return set(d.loc[d["kind"] == "accepted", "variant"]) - {run.baseline_id}


# ---------------------------------------------------------------- progress
def progress(run: Run) -> Figure | None:
    """val_bpb of every finished validation run over wall time, one panel per rung (the top rung first and
    tallest): accepted variants as stars, the final stack as diamonds, the baseline's mean dashed, and on
    the top rung the best variant mean so far (variants that finished every top-rung seed) as a step line."""
    e = run.evaluations
    done = e[(e["split"] == "val") & (e["status"] == "ok") & e["rung"].notna()]
    if done.empty:
        return None
    start = e["started"].min()
    span = (done["finished"].max() - start).total_seconds()
    unit, scale = ("hours", 3600.0) if span > 3 * 3600 else ("minutes", 60.0)
    when = (done["finished"] - start).dt.total_seconds() / scale
    rungs = list(reversed(run.ladder.rungs))
    fig = Figure(figsize=(10, 4.2 + 1.6 * (len(rungs) - 1)), layout="constrained")
    axes = fig.subplots(len(rungs), 1, sharex=True, height_ratios=[3] + [1] * (len(rungs) - 1), squeeze=False)[:, 0]
    marked = accepted(run)
    for ax, rung in zip(axes, rungs):
        here = done[done["rung"] == rung.index]
        top = rung is run.ladder.top
        ax.set_title(f"{'top rung' if top else 'rung'} {rung.index}: {rung.label} on {len(rung.seeds)} seed(s)",
                     loc="left", fontsize=9)
        ax.set_ylabel("val_bpb", fontsize=8)
        ax.tick_params(labelsize=8)
        if here.empty:
            ax.text(0.5, 0.5, "no finished evaluation at this rung yet", transform=ax.transAxes, ha="center",
                    va="center", color=BASELINE, fontsize=9)
            continue
        _progress_points(ax, here, when[here.index], run, marked, pale=not top)
        if top:
            _best_so_far(ax, here, when[here.index], rung.seeds, span / scale)
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    axes[-1].set_xlabel(f"{unit} since the run started (when each evaluation finished)", fontsize=8)
    return fig


def _progress_points(ax: Axes, here: pd.DataFrame, when: pd.Series, run: Run, marked: set[str],
                     pale: bool) -> None:
    values = here["val_bpb"]
    ceiling = _ceiling(values)
    shown = values.clip(upper=ceiling)
    stack = final_stack(run)
    kinds = [("other variants", ~here["variant"].isin(marked | {run.baseline_id, stack}), OTHER, "o", 14),
             ("baseline", here["variant"] == run.baseline_id, BASELINE, "s", 16),
             ("accepted", here["variant"].isin(marked - {stack}), ACCEPTED, "*", 70),
             ("final stack", here["variant"] == stack, STACK, "D", 30)]
    for label, rows, colour, marker, size in kinds:
        if rows.any():
            ax.scatter(when[rows], shown[rows], s=size, c=colour, marker=marker, alpha=0.35 if pale else 0.8,
                       edgecolors="black" if marker in "*D" else "none", linewidths=0.4, label=label, zorder=3)
    above = values > ceiling
    if above.any():
        ax.scatter(when[above], shown[above], marker="^", s=22, c="#c0392b", zorder=4,
                   label=f"{int(above.sum())} off the scale (> {ceiling:.3g})")
    base = here.loc[here["variant"] == run.baseline_id, "val_bpb"]
    if not base.empty:
        ax.axhline(base.mean(), color=BASELINE, linestyle="--", linewidth=0.9, label="baseline mean", zorder=2)


def _ceiling(values: pd.Series) -> float:
    """Where the y-axis stops: diverged runs would otherwise squash the differences that matter."""
    low, high = values.quantile(0.1), values.quantile(0.9)
    return max(float(values.max()) if high == low else high + _OUTLIER_SPREAD * (high - low), high)


def _best_so_far(ax: Axes, here: pd.DataFrame, when: pd.Series, seeds: Iterable[int], end: float) -> None:
    seeds = list(seeds)
    on_seeds = here[here["seed"].isin(seeds)].assign(when=when)
    complete = on_seeds.groupby("variant").filter(lambda g: g["seed"].nunique() == len(seeds))
    if complete.empty:
        return
    means = complete.groupby("variant").agg(val_bpb=("val_bpb", "mean"), when=("when", "max")).sort_values("when")
    best = means["val_bpb"].cummin()
    ax.step([*means["when"], end], [*best, best.iloc[-1]], where="post", color="#c0392b", linewidth=1.4,
            label="best variant mean so far", zorder=5)


# ---------------------------------------------------------------- ablation
def ablation_bars(run: Run) -> Figure | None:
    """Per stack member: add-one (alone on the baseline) and leave-one-out (the stack without it) mean delta,
    with 95% intervals as error bars; an unmeasured side is left out and an infinite interval (n < 2) has
    no bar."""
    a = run.ablation
    if a.empty:
        return None
    fig = Figure(figsize=(10, 1.4 + 0.75 * len(a)), layout="constrained")
    ax = fig.subplots()
    rows = np.arange(len(a))
    height = 0.36
    for offset, prefix, label, colour in ((-height / 2, "add_one", "add-one: alone on the baseline", OTHER),
                                          (height / 2, "leave_one_out", "leave-one-out: stack - stack without it",
                                           ACCEPTED)):
        mean, low, high = (a[f"{prefix}_{key}"].to_numpy(float) for key in ("mean", "ci_low", "ci_high"))
        error = np.vstack([mean - low, high - mean])
        error[~np.isfinite(error)] = 0.0
        ax.barh(rows + offset, np.nan_to_num(mean), height=height, xerr=error, color=colour, alpha=0.85,
                label=label, error_kw={"elinewidth": 1, "capsize": 3})
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(rows, [_wrap(atom, 34) for atom in a["atom"]], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("delta val_bpb at the top rung, 95% CI (negative: better)", fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    fig.legend(fontsize=8, loc="outside lower center", ncols=2)
    return fig


# ---------------------------------------------------------------- fidelity
def fidelity_scatter(run: Run) -> Figure | None:
    """Per pair of consecutive rungs, each variant's mean val_bpb at the low rung against the high one, with
    the rank correlations in the title: a low rung is only useful for pruning if it orders variants alike."""
    points, table = run.fidelity_points, run.fidelity
    pairs = table[table["n"] >= 2]  # one point shows no ordering
    if pairs.empty:
        return None
    fig = Figure(figsize=(min(10, 4.2 * len(pairs)), 4), layout="constrained")
    axes = fig.subplots(1, len(pairs), squeeze=False)[0]
    marked = accepted(run)
    for ax, pair in zip(axes, pairs.itertuples()):
        here = points[(points["low"] == pair.low) & (points["high"] == pair.high)]
        colours = [BASELINE if v == run.baseline_id else STACK if v == final_stack(run) else
                   ACCEPTED if v in marked else OTHER for v in here["variant"]]
        ax.scatter(here["low_val_bpb"], here["high_val_bpb"], c=colours, s=28, alpha=0.85, edgecolors="black",
                   linewidths=0.3)
        ax.set_title(f"{pair.low} -> {pair.high} (n={pair.n})\nSpearman {_number(pair.spearman)}, "
                     f"Kendall {_number(pair.kendall)}", fontsize=9)
        ax.set_xlabel(f"val_bpb at {pair.low}", fontsize=8)
        ax.set_ylabel(f"val_bpb at {pair.high}", fontsize=8)
        ax.tick_params(labelsize=8)
    return fig


# ---------------------------------------------------------------- lineage
def lineage_tree(run: Run) -> Figure | None:
    """The family tree of what mattered: variants that reached the top rung or were accepted, with their
    ancestors. One column per generation (left to right), an edge per parent; a merge's second parent is
    dashed. Labels: origin, short id, delta vs the baseline at the top rung."""
    variants = run.variants.set_index("id")
    nodes = _lineage_nodes(run, variants)
    if len(nodes) < 2:
        return None
    depth = _depths(nodes, variants)
    layers: dict[int, list[str]] = {}
    for node in sorted(nodes, key=lambda v: variants.at[v, "created"]):
        layers.setdefault(depth[node], []).append(node)
    y = _layer_positions(layers, variants)
    tallest = max(len(layer) for layer in layers.values())
    fig = Figure(figsize=(max(10.0, 2.0 * len(layers)), max(2.2, 0.62 * tallest + 0.8)), layout="constrained")
    ax = fig.subplots()
    for child in nodes:
        for i, parent in enumerate(variants.at[child, "parents"]):
            if parent in y:
                ax.plot([depth[parent], depth[child]], [y[parent], y[child]], color=MERGED if i else "#9a9a9a",
                        linestyle="--" if i else "-", linewidth=1.0, zorder=1)
    marked = accepted(run)
    for node in nodes:
        colour = BASELINE if node == run.baseline_id else STACK if node == final_stack(run) else \
            ACCEPTED if node in marked else OTHER
        ax.text(depth[node], y[node], _node_label(node, variants.loc[node], run.baseline_id), ha="center",
                va="center", fontsize=8, zorder=3,
                bbox={"boxstyle": "round,pad=0.35", "facecolor": _FILL[colour], "edgecolor": colour,
                      "linewidth": 1.4 if colour != OTHER else 0.6})
    ax.set_xlim(-0.6, len(layers) - 0.4)
    ax.set_ylim(-0.7, tallest - 0.3)
    ax.invert_yaxis()
    ax.set_xticks(range(len(layers)), [f"generation {d}" for d in range(len(layers))], fontsize=8)
    ax.tick_params(axis="x", length=0)
    ax.set_yticks([])
    for side in ("top", "right", "left", "bottom"):
        ax.spines[side].set_visible(False)
    return fig


def _lineage_nodes(run: Run, variants: pd.DataFrame) -> set[str]:
    e = run.evaluations
    top = e[(e["split"] == "val") & (e["rung"] == run.ladder.top.index)]
    wanted = set(top["variant"]) | accepted(run) | {run.baseline_id, final_stack(run)} - {None}
    nodes, todo = set(), [v for v in wanted if v in variants.index]
    while todo:
        node = todo.pop()
        if node not in nodes:
            nodes.add(node)
            todo += [p for p in variants.at[node, "parents"] if p in variants.index]
    return nodes


def _depths(nodes: set[str], variants: pd.DataFrame) -> dict[str, int]:
    """Generation: one more than the deepest parent (the baseline is 0)."""
    depth: dict[str, int] = {}

    def of(node: str) -> int:
        if node not in depth:
            parents = [p for p in variants.at[node, "parents"] if p in nodes]
            depth[node] = 1 + max(map(of, parents)) if parents else 0
        return depth[node]

    for node in nodes:
        of(node)
    return depth


def _layer_positions(layers: dict[int, list[str]], variants: pd.DataFrame) -> dict[str, float]:
    """Rows within each generation, ordered by their first parent's row so edges cross less."""
    y: dict[str, float] = {}
    for level in sorted(layers):
        layer = sorted(layers[level], key=lambda v: y.get((variants.at[v, "parents"] or [None])[0], 0.0))
        for row, node in enumerate(layer):
            y[node] = float(row)
    return y


def _node_label(node: str, row: pd.Series, baseline: str) -> str:
    if node == baseline:
        return f"baseline\n{node[:8]}"
    delta = "" if math.isnan(row["delta"]) else f" {row['delta']:+.3f}"
    return f"{_wrap(row['origin'], 26)}\n{node[:8]}{delta}"


# ---------------------------------------------------------------- knob importance
def knob_importance(run: Run) -> Figure | None:
    """Per Optuna study (the studies with most trials first), each knob's share of the objective's variance."""
    k = run.knob_importance
    if k.empty:
        return None
    studies = k.groupby("study", sort=False)["n_trials"].max().sort_values(ascending=False).index[:MAX_STUDIES]
    shown = [_knobs(k[k["study"] == s]) for s in studies]
    fig = Figure(figsize=(8, sum(0.9 + 0.26 * len(s) for s in shown)), layout="constrained")
    axes = fig.subplots(len(shown), 1, squeeze=False, height_ratios=[0.9 + 0.26 * len(s) for s in shown])[:, 0]
    for ax, study in zip(axes, shown):
        first = study.iloc[0]
        ax.barh(study["param"], study["importance"], color=OTHER)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        left_out = int((k["study"] == first["study"]).sum()) - len(study)
        more = f"; {left_out} knobs of no or less importance not shown" if left_out else ""
        ax.set_title(f"study of {_origin(run, first['variant'])} {first['variant'][:8]}: {first['n_trials']} complete "
                     f"trials{more}", loc="left", fontsize=9)
        ax.tick_params(labelsize=8)
    axes[-1].set_xlabel("importance (share of the objective's variance, PED-ANOVA)", fontsize=8)
    return fig


def _knobs(study: pd.DataFrame) -> pd.DataFrame:
    """The most important knobs; those with no measurable importance only when no knob has any."""
    ranked = study.sort_values("importance", ascending=False)
    some = ranked[ranked["importance"] > 0]
    return (some if not some.empty else ranked).head(MAX_KNOBS)


def _origin(run: Run, variant: str) -> str:
    v = run.variants
    found = v.loc[v["id"] == variant, "origin"]
    return found.iloc[0] if not found.empty else "variant"


# ---------------------------------------------------------------- helpers
def _number(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.2f}"


def _wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(str(text), width, break_on_hyphens=False)) or str(text)
