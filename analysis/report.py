"""A run as one self-contained HTML page: headline numbers, plots and tables, readable offline.

    import analysis
    from analysis.report import write
    write(analysis.load("runs/evolve"), "report.html")

The plots (analysis.plots) are embedded as base64 PNG and the style sheet is inline, so the
file can be mailed or opened from a copied run with no network. Every section is always
there; one whose data the run has not produced yet says so in one line.
"""
from __future__ import annotations

import base64
import html
import io
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from analysis import plots
from population.stats import describe_noise

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from analysis.run import Run

SECTIONS = ("Run", "Progress", "Ablation", "Fidelity", "Lineage", "Knob importance", "Tables")
EMPTY = "no data yet"
_DPI = 110

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; margin: 0 auto;
       max-width: 1120px; padding: 16px 28px 48px; }
h1 { font-size: 22px; margin-bottom: 2px; } h2 { font-size: 18px; border-bottom: 1px solid #ddd;
     padding-bottom: 3px; margin-top: 34px; } h3 { font-size: 15px; margin: 20px 0 6px; }
.sub { color: #666; margin-top: 0; } .empty { color: #888; font-style: italic; }
.note { color: #555; font-size: 13px; } code { font-size: 12.5px; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 3px 16px; margin: 10px 0; }
dt { font-weight: 600; color: #444; } dd { margin: 0; } dd p, dd ul { margin: 0; }
img.plot { display: block; max-width: 100%; height: auto; margin: 8px 0; }
table.data { border-collapse: collapse; font-size: 12.5px; margin: 6px 0 14px; }
table.data th, table.data td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
table.data th { background: #f3f3f3; } table.data tr:nth-child(even) td { background: #fafafa; }
.good { color: #1e7a2e; font-weight: 600; } .bad { color: #b03a2e; font-weight: 600; }
"""


def write(run: Run, path: str | Path) -> Path:
    """Write the report of run to path (folders made as needed); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(run), encoding="utf-8")
    return path


def render(run: Run) -> str:
    """The report as one HTML document."""
    body = "".join([_header(run), _progress(run), _ablation(run), _fidelity(run), _lineage(run),
                    _knob_importance(run), _tables(run)])
    title = html.escape(f"evotrain report: {run.location}")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>"
            f"<style>{_CSS}</style></head><body>{body}</body></html>\n")


# ---------------------------------------------------------------- sections
def _header(run: Run) -> str:
    s = run.summary()
    o = run.options
    ladder = " -> ".join(f"{r.label} x {len(r.seeds)} seed{'s' * (len(r.seeds) > 1)}" for r in run.ladder.rungs)
    baseline = f"<code>{s['baseline'][:12]}</code>" + (
        f": {s['baseline_val_bpb']:.4f} val_bpb at {s['top_budget']}" if s["baseline_val_bpb"] is not None else "")
    rows = [("run", html.escape(str(run.run_dir or run.location))), ("phase", html.escape(s["phase"])),
            ("baseline", baseline),
            ("options", html.escape(f"strategy {o.get('strategy', 'asha')}, budget {o['budget']}, ladder {ladder}, "
                                    f"population {o['population']}, mutator {o['mutator']}, device {o['device']}")),
            ("noise", _noise(run)),
            ("work", html.escape(f"{s['variants']} variants, {s['accepted']} accepted, {s['in_population']} in the "
                                 f"population; {s['evaluations']} evaluations, "
                                 f"{s['compute_seconds'] / 3600:.2f} h compute, ${s['llm_cost_usd']:.2f} LLM")),
            ("held-out test", _test(run)), ("stack", _stack(run))]
    items = "".join(f"<dt>{key}</dt><dd>{value}</dd>" for key, value in rows)
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f"<h1>evotrain report</h1><p class=\"sub\">{html.escape(run.location)} &middot; generated "
            f"{generated}</p>{_section('Run', f'<dl>{items}</dl>')}")


def _noise(run: Run) -> str:
    noise = run.meta.get("noise")
    if noise:
        return html.escape(f"{describe_noise(noise)}; every decision is read against it")
    sd = run.summary()["noise_sd"]
    if sd is not None and not math.isnan(sd):
        return html.escape(f"baseline seed sd {sd:.4g} bpb at {run.ladder.top.label}")
    return _empty("the baseline has not finished its top-rung seeds")


def _test(run: Run) -> str:
    test = run.test_result
    if test is None:
        return _empty(_after_combine(run, "the held-out test runs after the combine step"))
    style = "good" if test["mean"] < 0 else "bad"
    return f"stack - baseline: <span class=\"{style}\">{html.escape(_paired(test))}</span>"


def _stack(run: Run) -> str:
    if run.stack_id is None:
        return _empty("the stack is built by the combine step, after the search")
    members = run.ablation
    if members.empty:
        return f"<code>{run.stack_id[:12]}</code>: the baseline (no change beat it)"
    items = "".join(f"<li><code>{html.escape(r.atom)}</code>: {html.escape(r.description)}</li>"
                    for r in members.itertuples())
    return f"<code>{run.stack_id[:12]}</code>, {len(members)} atomic mutations:<ul>{items}</ul>"


def _progress(run: Run) -> str:
    note = ("Every finished validation run, one panel per rung (the top rung first). Stars: accepted variants; "
            "diamonds: the final stack; dashed: the baseline's mean; red steps: the best variant mean so far "
            "among variants that finished every top-rung seed.")
    return _section("Progress", _figure(plots.progress(run), "progress", note,
                                        "no evaluation has finished yet"))


def _ablation(run: Run) -> str:
    total = run.stack_total()
    text = ""
    if total is not None and not run.ablation.empty:
        measured = _interval(total["total"], total["total_ci_low"], total["total_ci_high"], total["total_n"])
        text = (f"<p>Stack total vs the baseline: <b>{html.escape(measured)}</b>; sum of add-one deltas "
                f"{total['sum_add_one']:+.4f}, of leave-one-out {total['sum_leave_one_out']:+.4f}; interaction "
                f"(total - sum of add-one) {total['interaction']:+.4f}.</p>")
    note = ("add-one: the atom alone on the baseline vs the baseline; leave-one-out: the stack vs the stack "
            "without the atom. Bars are mean paired deltas at the top rung with 95% intervals.")
    return _section("Ablation", text + _figure(plots.ablation_bars(run), "ablation", note,
                                               _after_combine(run, "the ablation runs in the combine step, after "
                                                                   "the search")))


def _fidelity(run: Run) -> str:
    note = "One point per variant that finished every seed of both rungs; grey: baseline, green: accepted."
    return _section("Fidelity", _figure(plots.fidelity_scatter(run), "fidelity", note,
                                        "no variant has finished two rungs"))


def _lineage(run: Run) -> str:
    note = ("Variants that reached the top rung or were accepted, and their ancestors. Grey: baseline, green: "
            "accepted, gold: final stack; dashed purple edges: a merge's second parent. Labels: origin, id, "
            "delta vs the baseline at the top rung.")
    return _section("Lineage", _figure(plots.lineage_tree(run), "lineage", note,
                                       "no variant has reached the top rung or been accepted"))


def _knob_importance(run: Run) -> str:
    studies = run.knob_importance["study"].nunique()
    more = studies - plots.MAX_STUDIES
    note = "Optuna's parameter importance per study (one study per tuned variant)" + (
        f"; {more} more studies in run.knob_importance" if more > 0 else "") + "."
    return _section("Knob importance", _figure(plots.knob_importance(run), "knob-importance", note,
                                               "no study had enough complete trials"))


def _tables(run: Run) -> str:
    parts = [("Ablation table", _ablation_table(run), _after_combine(run, "the combine step has not ablated a stack")),
             ("Population", _population_table(run), "nothing is in the population"),
             ("Cost per purpose", _cost_table(run), "no evaluation has run"),
             ("Decisions", _decisions_table(run), "the search has taken no decision")]
    body = "".join(f"<h3>{title}</h3>" + (_empty(reason) if table is None else _html_table(table))
                   for title, table, reason in parts)
    llm = run.llm_usage
    if llm["calls"]:
        body += (f"<p class=\"note\">LLM: {llm['calls']} calls, {llm['input_tokens']} input and "
                 f"{llm['output_tokens']} output tokens, ${llm['cost_usd']:.2f}.</p>")
    return _section("Tables", body)


# ---------------------------------------------------------------- tables
def _ablation_table(run: Run) -> pd.DataFrame | None:
    a = run.ablation
    if a.empty:
        return None
    return pd.DataFrame({
        "atom": a["atom"], "description": a["description"], "bundled": a["bundled"],
        "estimate": a["estimate"].map(lambda v: "-" if math.isnan(v) else f"{v:+.4f}"),
        **{name: [_cell(*values) for values in zip(*(a[f"{prefix}_{k}"] for k in ("mean", "ci_low", "ci_high", "n")))]
           for name, prefix in (("add-one", "add_one"), ("leave-one-out", "leave_one_out"),
                                ("interaction", "interaction"))}})


def _population_table(run: Run) -> pd.DataFrame | None:
    v = run.variants[run.variants["in_population"]]
    if v.empty:
        return None
    others = v["id"] != run.baseline_id  # the baseline is the reference: no delta of its own
    return pd.DataFrame({
        "variant": v["id"].str[:12], "origin": v["origin"], "description": v["description"],
        "top val_bpb": v["top_val_bpb"].map(lambda x: "" if math.isnan(x) else f"{x:.4f}"),
        "delta vs baseline": [_cell(*r) if other else "" for other, *r in
                              zip(others, v["delta"], v["ci_low"], v["ci_high"], v["n"])],
        "p_better": [f"{p:.3g}" if other and not math.isnan(p) else "" for other, p in zip(others, v["p_better"])],
        "evaluations": v["evaluations"]})


def _cost_table(run: Run) -> pd.DataFrame | None:
    c = run.cost
    if c.empty:
        return None
    return c.assign(compute_minutes=(c["compute_seconds"] / 60).round(1),
                    training_minutes=(c["training_seconds"] / 60).round(1)
                    ).drop(columns=["compute_seconds", "training_seconds"])


def _decisions_table(run: Run) -> pd.DataFrame | None:
    d = run.decisions
    if d.empty:
        return None
    rung = d["rung"].map(lambda r: "no rung" if pd.isna(r) else f"rung {r}")
    counts = pd.crosstab(d["kind"], rung)
    counts["total"] = counts.sum(axis=1)
    return counts.sort_values("total", ascending=False).rename_axis(index="decision", columns=None).reset_index()


# ---------------------------------------------------------------- pieces
def _after_combine(run: Run, before: str) -> str:
    """Why a combine-step result is missing: not there yet, or nothing beat the baseline."""
    if run.stack_id == run.baseline_id:
        return "no change beat the baseline, so there was no stack to ablate or test"
    return before


def _section(title: str, body: str) -> str:
    anchor = title.lower().replace(" ", "-")
    return f"<section id=\"{anchor}\"><h2>{html.escape(title)}</h2>{body}</section>"


def _empty(reason: str) -> str:
    return f"<p class=\"empty\">{EMPTY}: {html.escape(reason)}.</p>"


def _figure(fig: Figure | None, name: str, note: str, reason: str) -> str:
    """The figure as an embedded PNG with its caption, or the one-line note when there is nothing to draw."""
    if fig is None:
        return _empty(reason)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (f"<img class=\"plot\" alt=\"{name} plot\" data-plot=\"{name}\" src=\"data:image/png;base64,{data}\">"
            f"<p class=\"note\">{html.escape(note)}</p>")


def _html_table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, classes="data", border=0, na_rep="", float_format=lambda x: f"{x:.4g}")


def _interval(mean: float, low: float | None, high: float | None, n: int | None) -> str:
    """mean bpb, 95% CI [low, high], n=N; an infinite or missing interval (fewer than two seeds) is left out."""
    if mean is None or pd.isna(mean):
        return "not measured"
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return f"{mean:+.4f} bpb, n={n}"
    return f"{mean:+.4f} bpb, 95% CI [{low:+.4f}, {high:+.4f}], n={n}"


def _cell(mean: float, low: float, high: float, n: int | None) -> str:
    """A table cell: mean +- the 95% interval's half-width (the t interval is symmetric), unbroken."""
    if mean is None or pd.isna(mean):
        return "not measured"
    spread = f" ± {(high - low) / 2:.4f}" if math.isfinite(low) and math.isfinite(high) else ""
    return f"{mean:+.4f}{spread} (n={n})".replace(" ", "\u00a0")


def _paired(test: dict) -> str:
    line = _interval(test["mean"], test["ci_low"], test["ci_high"], test["n"])
    return line if test["p_better"] is None else f"{line}, p={test['p_better']:.3g}"
