"""The columns of every table, in order, with what each means: the one list the docs and tests read.

`Run`'s table properties take their help text from here (`help(analysis.Run)` shows it), and
each table is built with exactly these columns, in this order, even when it has no rows.
Differences are child - reference in val_bpb (bits per byte, lower is better), so a
negative delta is an improvement. Confidence intervals are two-sided 95% t intervals on the
per-seed differences; with fewer than two seeds they are -inf/inf and p_better is NaN.
"""
from __future__ import annotations

import textwrap

_PAIRED = {
    "mean": "mean paired difference (negative: better)",
    "ci_low": "low end of its 95% interval",
    "ci_high": "high end of its 95% interval",
    "n": "seeds it was measured on",
}


def _paired(prefix: str, what: str, sign: str = _PAIRED["mean"]) -> dict[str, str]:
    return {f"{prefix}_{key}": f"{what}: {sign if key == 'mean' else text}" for key, text in _PAIRED.items()}


TABLES: dict[str, tuple[str, dict[str, str]]] = {
    "evaluations": ("One row per evaluation (one variant, budget, seed and split), in the order they were claimed.", {
        "id": "the store's evaluation id",
        "variant": "variant id",
        "origin": "the variant's origin: baseline, catalog:NAME, llm:MODEL, merge, tune, stack, ablation",
        "budget": "the budget as written (300k, 60s, 1tok for smoke runs)",
        "budget_unit": "tokens or seconds",
        "budget_amount": "the budget in its unit",
        "seed": "training seed",
        "split": "val, or test for the held-out test",
        "purpose": "why it ran, as the search recorded it: smoke (one step), noise (the baseline before the "
                   "search), rung K (a candidate's climb), recheck (an elite on fresh seeds), stack, stack tune, "
                   "ablation, test (the held-out split)",
        "rung": "the ladder rung whose budget it ran at (<NA> for smoke, test and other budgets)",
        "status": "ok, crash, timeout, oom, nan, leak, invalid, over_budget, pruned, or running",
        "message": "one line from the runner: why it failed, or what is notable",
        "val_bpb": "validation bits per byte (NaN unless it finished ok)",
        "steps": "optimizer steps taken",
        "tokens": "training tokens seen",
        "training_seconds": "seconds spent training",
        "wall_seconds": "seconds from start to end of the run (start-up and evaluation included)",
        "overhead_seconds": "wall_seconds - training_seconds",
        "tokens_per_second": "training throughput",
        "peak_memory_mb": "peak device memory on CUDA, resident memory on CPU",
        "cpu_seconds": "CPU time of the training process tree, measured from outside it",
        "flops": "training FLOPs: 3 x the model's forward FLOPs per token x tokens",
        "trusted": "False for a score a script printed itself (compatibility mode, --compat); None while running",
        "isolation": "namespaces, or process where the machine has none (the fallback sandbox); '' while running",
        "started": "when it was claimed (UTC datetime)",
        "finished": "when its result was committed (UTC datetime, NaT while running)",
        "log_path": "the run's log file",
    }),
    "variants": ("One row per variant, in the order they were created.", {
        "id": "variant id (hash of source and knob values)",
        "origin": "baseline, catalog:NAME, llm:MODEL, merge, tune, stack or ablation",
        "mutation": "the name of the mutation that made it from its first parent ('' for the baseline)",
        "description": "the mutation's one-line description",
        "parents": "list of parent ids: [reference] or, for a merge, [reference, merged member]",
        "reference": "parents[0], the variant it was judged against (missing for the baseline)",
        "created": "when it was stored (UTC datetime)",
        "state": "its last decision (accepted, rejected, failed, refused, pruned, promoted, confirmed, retired, "
                 "dropped), or pending when it has none: still in the search, or made by the combine step "
                 "(stack, ablation and stack-tuning variants get no decision)",
        "in_population": "accepted and not retired or dropped since (the baseline included)",
        "top_val_bpb": "mean val_bpb over the top rung's seeds it has (NaN when none)",
        **{("delta" if k == "mean" else k): f"vs the baseline at the top rung on shared seeds: {v}"
           for k, v in _PAIRED.items()},
        "p_better": "one-sided paired t-test p-value that it beats the baseline",
        "evaluations": "how many evaluations it has (any budget, split, status)",
        "compute_seconds": "sum of its evaluations' wall_seconds",
    }),
    "lineage": ("One row per parent link: the edges of the family tree.", {
        "child": "variant id",
        "parent": "one of its parents",
        "role": "parent (parents[0], the reference) or merged (a merge's other parent)",
        "origin": "the child's origin",
        "mutation": "the child's mutation name",
    }),
    "decisions": ("One row per decision the search took, in order.", {
        "variant": "the variant decided on",
        "kind": "accepted, rejected, failed, refused, pruned, promoted, confirmed, retired or dropped",
        "rung": "the rung it was taken at (<NA> when not a rung's judgement)",
        "reference": "the variant it was compared with",
        **{k: f"the paired comparison behind it (NaN when none): {v}" for k, v in _PAIRED.items()},
        "p_better": "one-sided paired t-test p-value of the comparison",
        "reason": "why, in words ('' when the comparison says it all)",
        "time": "when (UTC datetime)",
        "detail": "the stored detail (dict): log_tail of a failure, fresh_seeds of a re-check, ...",
    }),
    "ablation": ("One row per atomic mutation of the final stack, recomputed from the evaluations at the top "
                 "rung's budget on its seeds. add_one is the atom alone on the baseline vs the baseline; "
                 "leave_one_out is the stack vs the stack without the atom (its contribution inside the stack); "
                 "interaction is, per seed all four variants share, (stack - without) - (alone - baseline): "
                 "leave_one_out - add_one when both use the same seeds; 0 when the atom adds up.", {
        "atom": "the atom's name: MUTATION#VARIANT (the accepted variant whose own change it is)",
        "description": "what the change does",
        "bundled": "True when it could not be separated from its ancestors' changes",
        "estimate": "the search's own estimate of what it does in the stack: its paired delta against its parent "
                    "when accepted (asha, greedy), the model's leave-one-out (additive); NaN when none",
        "alone": "variant id of the baseline plus this atom only",
        "without": "variant id of the stack without this atom",
        **_paired("add_one", "alone - baseline"),
        **_paired("leave_one_out", "stack - without"),
        **_paired("interaction", "(stack - without) - (alone - baseline)",
                  "mean per-seed difference (negative: the atom gains more inside the stack than alone)"),
        "model_add_one": "the additive model's estimate of alone - baseline (NaN for other strategies)",
        "model_leave_one_out": "the additive model's estimate of stack - without",
        "model_leave_one_out_sd": "its posterior sd",
        "model_p_helps": "the model's probability that the atom helps inside the stack",
    }),
    "fidelity": ("One row per pair of consecutive rungs: do low rungs rank variants like higher ones? Each "
                 "variant's mean over a rung's seeds, for the variants that finished every seed of both.", {
        "low": "the lower rung's budget",
        "high": "the higher rung's budget",
        "n": "variants measured on both",
        "spearman": "Spearman rank correlation (NaN with fewer than 3 variants or a constant side)",
        "kendall": "Kendall tau (NaN likewise)",
    }),
    "fidelity_points": ("One row per variant and rung pair behind `fidelity`: the scatter plot's points.", {
        "variant": "variant id",
        "low": "the lower rung's budget",
        "high": "the higher rung's budget",
        "low_val_bpb": "mean val_bpb over the lower rung's seeds",
        "high_val_bpb": "mean val_bpb over the higher rung's seeds",
    }),
    "knob_importance": ("One row per knob of each Optuna study (one study per tuned variant) with at least two "
                        "complete trials, by optuna.importance.get_param_importances (PED-ANOVA, its default); "
                        "studies where it cannot be computed are left out.", {
        "study": "the Optuna study name (knobs-VARIANT)",
        "variant": "the variant whose knobs the study tunes",
        "param": "the knob",
        "importance": "its share of the variance of the objective (the study's importances sum to 1)",
        "n_trials": "complete trials of the study",
    }),
    "cost": ("One row per evaluation purpose (see evaluations.purpose): where the compute went.", {
        "purpose": "as in evaluations.purpose",
        "evaluations": "how many evaluations",
        "failed": "how many failed (crash, timeout, oom, nan, leak, invalid, over_budget)",
        "compute_seconds": "sum of wall_seconds",
        "training_seconds": "sum of training_seconds",
    }),
    "test": ("One row per held-out test seed both the final stack and the baseline finished.", {
        "seed": "test seed (never used by the search)",
        "stack_val_bpb": "the final stack's val_bpb on the test split",
        "baseline_val_bpb": "the baseline's",
        "delta": "stack - baseline (negative: the stack is better)",
    }),
}

COLUMNS: dict[str, tuple[str, ...]] = {name: tuple(columns) for name, (_, columns) in TABLES.items()}


def help_text(table: str) -> str:
    """The docstring of a table property: what a row is, then each column."""
    summary, columns = TABLES[table]
    width = max(len(name) for name in columns)
    lines = [*textwrap.wrap(summary, 100), "", "Columns:"]
    for name, text in columns.items():
        lines += textwrap.wrap(text, 100, initial_indent=f"    {name:<{width}}  ", subsequent_indent=" " * (width + 6))
    return "\n".join(lines)
