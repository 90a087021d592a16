"""A run as pandas tables: `load(run_dir_or_url)` -> Run.

Run reads the store once per table, on first use, and keeps the frame; load a run again
to see what a search still running has added since. The frames' columns are documented on
each property (analysis.columns holds the lists).
"""
from __future__ import annotations

import html
from collections.abc import Callable
from functools import cached_property
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from analysis import costs, effects, tables
from analysis.columns import TABLES, help_text
from analysis.tables import Scores
from population.stats import Paired, paired, spread
from population.store import DATABASE, Decision, Evaluation, Store, Variant
from population.ladder import Ladder
from trainer.budget import Budget
from trainer.errors import UserError
from trainer.program import Program

_HOW = "give the directory of a `search evolve` run or its database URL"


def load(target: str | Path) -> Run:
    """The run in a run directory (its evotrain.db), an evotrain.db file, or at an SQLAlchemy URL."""
    url, run_dir = _locate(target)
    _check_store(url, target)
    store = Store(url)
    meta = store.meta()
    if "options" not in meta or "baseline" not in meta:
        store.close()
        raise UserError(f"{target} has a run store but no search was started in it (no options or baseline "
                        "recorded): run `search evolve` first")
    if run_dir is None:
        stored = Path(meta["options"]["run_dir"])
        run_dir = stored if stored.is_dir() else None
    return Run(store, meta, str(target), run_dir)


def _locate(target: str | Path) -> tuple[str, Path | None]:
    text = str(target)
    if "://" in text:
        return text, None
    path = Path(target)
    if path.is_dir():
        database = path / DATABASE
        if not database.is_file():
            raise UserError(f"{path} holds no run store ({DATABASE}): {_HOW}")
        return f"sqlite:///{database.resolve()}", path
    if path.is_file():
        return f"sqlite:///{path.resolve()}", path.parent
    raise UserError(f"no such run directory: {path}; {_HOW}")


def _check_store(url: str, target: str | Path) -> None:
    """Refuse what is not a run store before opening it: Store() would create its tables there."""
    try:
        parsed = sa.engine.make_url(url)
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:") \
                and not Path(parsed.database).is_file():
            raise UserError(f"no database file {parsed.database} for {target}; {_HOW}")
        engine = sa.create_engine(parsed)
        try:
            found = sa.inspect(engine).has_table("evotrain_meta")
        finally:
            engine.dispose()
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, sa.exc.DatabaseError, ImportError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"cannot open {target} ({first}); {_HOW}") from None
    if not found:
        raise UserError(f"{target} is not an evotrain run store (no evotrain_meta table); {_HOW}")


def _table(name: str) -> Callable[[Callable[[Run], pd.DataFrame]], cached_property]:
    """A cached DataFrame property whose help lists the table's documented columns."""
    def wrap(method: Callable[[Run], pd.DataFrame]) -> cached_property:
        method.__doc__ = help_text(name)
        return cached_property(method)
    return wrap


class Run:
    """A search's results as pandas DataFrames, read lazily from its store and cached.

    Tables: evaluations, variants, lineage, decisions, ablation, fidelity, fidelity_points,
    knob_importance, cost, test (each property's help lists its columns). Also: meta (the
    stored metadata), options (the options it ran with, a dict), ladder, baseline_id, stack_id,
    result (what the combine step stored), test_result, llm_cost, llm_usage, source(id),
    stack_total() and summary(). Differences are child - reference in val_bpb: negative is better.
    """

    def __init__(self, store: Store, meta: dict, location: str, run_dir: Path | None) -> None:
        self.store, self.meta, self.location, self.run_dir = store, meta, location, run_dir

    # ---------------------------------------------------------------- settings
    @property
    def options(self) -> dict:
        """The options the search ran with (meta "options": search/config.py's EvolveConfig as a dict)."""
        return self.meta["options"]

    @cached_property
    def ladder(self) -> Ladder:
        """The rung budgets and seeds the search used (meta "ladder"; for runs stored before it, the options')."""
        if "ladder" in self.meta:
            return Ladder.from_dict(self.meta["ladder"])
        o = self.options
        return Ladder.build(Budget.parse(o["budget"]), tuple(o["fractions"]), tuple(o["seeds"]), o["eta"], o["seed"])

    @property
    def baseline_id(self) -> str:
        return self.meta["baseline"]["id"]

    @property
    def result(self) -> dict | None:
        """What the combine step stored (meta "result"); None until it has run."""
        return self.meta.get("result")

    @property
    def stack_id(self) -> str | None:
        """The final combined variant (the baseline when nothing beat it); None before the combine step."""
        return self.result["stack"] if self.result else None

    def source(self, variant_id: str) -> str:
        """The train.py source of a variant (of a script with local modules, its script: see `files`)."""
        return Program.parse(self._variant(variant_id).source).script

    def files(self, variant_id: str) -> dict[str, str]:
        """Every file of a variant by name: its script, and the local modules of a multi-file baseline."""
        return dict(Program.parse(self._variant(variant_id).source).files)

    def _variant(self, variant_id: str) -> Variant:
        variant = self._variants.get(variant_id)
        if variant is None:
            raise UserError(f"no variant {variant_id!r} in {self.location}: see run.variants for the ids")
        return variant

    # ---------------------------------------------------------------- records
    @cached_property
    def _variants(self) -> dict[str, Variant]:
        return {v.id: v for v in self.store.variants()}

    @cached_property
    def _evaluations(self) -> list[Evaluation]:
        return self.store.evaluations()

    @cached_property
    def _decisions(self) -> list[Decision]:
        return self.store.decisions()

    @cached_property
    def _scores(self) -> Scores:
        return Scores(self._evaluations)

    # ---------------------------------------------------------------- tables
    @_table("evaluations")
    def evaluations(self) -> pd.DataFrame:
        return tables.evaluations(self._evaluations, self._variants, self.ladder)

    @_table("variants")
    def variants(self) -> pd.DataFrame:
        return tables.variants(list(self._variants.values()), self._decisions, self.evaluations, self._scores,
                               self.ladder, self.baseline_id)

    @_table("lineage")
    def lineage(self) -> pd.DataFrame:
        return tables.lineage(list(self._variants.values()))

    @_table("decisions")
    def decisions(self) -> pd.DataFrame:
        return tables.decisions(self._decisions)

    @_table("ablation")
    def ablation(self) -> pd.DataFrame:
        members = self.result["ablation"] if self.result else []
        return effects.ablation(members, self._scores, self.ladder, self.baseline_id, self.stack_id)

    @_table("fidelity")
    def fidelity(self) -> pd.DataFrame:
        return effects.fidelity(self.fidelity_points, self.ladder)

    @_table("fidelity_points")
    def fidelity_points(self) -> pd.DataFrame:
        return effects.fidelity_points(list(self._variants), self._scores, self.ladder)

    @_table("knob_importance")
    def knob_importance(self) -> pd.DataFrame:
        return costs.knob_importance(self.store.url)

    @_table("cost")
    def cost(self) -> pd.DataFrame:
        return costs.cost(self.evaluations)

    @_table("test")
    def test(self) -> pd.DataFrame:
        return self._held_out[0]

    @cached_property
    def _held_out(self) -> tuple[pd.DataFrame, Paired | None]:
        return effects.held_out(self._scores, self.ladder, self.baseline_id, self.stack_id)

    # ---------------------------------------------------------------- headline numbers
    @property
    def test_result(self) -> dict | None:
        """The stack vs the baseline on the held-out test seeds: Paired.to_dict() (n, mean, sd, ci_low,
        ci_high, p_better, seeds; None for an infinite interval), or None without a stack or test."""
        comparison = self._held_out[1]
        return None if comparison is None else comparison.to_dict()

    def stack_total(self) -> dict | None:
        """The stack's total delta vs the baseline (paired, top rung) beside the sum of its members'
        add-one deltas: total, total_ci_low, total_ci_high, total_n, total_p_better, sum_add_one,
        sum_leave_one_out, interaction (total - sum_add_one: what the atoms do together beyond the sum
        of what each does alone), stack, members. None before the combine step."""
        if self.stack_id is None:
            return None
        return effects.stack_total(self.ablation, self._scores, self.ladder, self.baseline_id, self.stack_id)

    @property
    def llm_cost(self) -> float:
        """Dollars the LLM mutator spent (meta llm_cost_usd)."""
        return float(self.meta.get("llm_cost_usd", 0.0))

    @cached_property
    def llm_usage(self) -> dict:
        """calls, input_tokens, output_tokens, cache_creation_input_tokens, cache_read_input_tokens and
        cost_usd summed over the run directory's llm.jsonl (zeros when there is none)."""
        return costs.llm_usage(self.run_dir)

    def summary(self) -> dict:
        """The headline numbers as a flat dict."""
        top = self.ladder.top
        base = self._scores.get(self.baseline_id, top.label, top.seeds)
        total = self.stack_total() or {}
        test = self.test_result or {}
        kinds = self.decisions["kind"]
        return {
            "run": self.location, "phase": self.meta.get("phase", "noise"), "baseline": self.baseline_id,
            "top_budget": top.label, "baseline_val_bpb": sum(base.values()) / len(base) if base else None,
            "noise_sd": spread(list(base.values())) if base else None,
            "variants": len(self.variants), "evaluations": len(self.evaluations),
            "accepted": int(((kinds == "accepted") & (self.decisions["variant"] != self.baseline_id)).sum()),
            "in_population": int(self.variants["in_population"].sum()),
            "stack": self.stack_id, "members": list(self.ablation["atom"]),
            "val_delta": total.get("total"), "val_ci_low": total.get("total_ci_low"),
            "val_ci_high": total.get("total_ci_high"), "val_n": total.get("total_n"),
            "sum_add_one": total.get("sum_add_one"),
            "test_delta": test.get("mean"), "test_ci_low": test.get("ci_low"), "test_ci_high": test.get("ci_high"),
            "test_n": test.get("n"), "test_p_better": test.get("p_better"),
            "compute_seconds": float(self.evaluations["wall_seconds"].sum()),
            "elapsed_seconds": self.meta.get("elapsed"), "llm_cost_usd": self.llm_cost,
        }

    # ---------------------------------------------------------------- display
    def _headline(self) -> list[str]:
        s = self.summary()
        lines = [f"evotrain run {s['run']} (phase {s['phase']})"]
        if s["baseline_val_bpb"] is not None:
            lines.append(f"baseline {s['baseline'][:8]}: {s['baseline_val_bpb']:.4f} val_bpb at {s['top_budget']}"
                         f" (seed sd {s['noise_sd']:.3g})")
        lines.append(f"{s['variants']} variants, {s['accepted']} accepted, {s['in_population']} in the population; "
                     f"{s['evaluations']} evaluations, {s['compute_seconds'] / 3600:.2f} h compute, "
                     f"${s['llm_cost_usd']:.2f} LLM")
        if s["stack"] is not None:
            top = self.ladder.top
            val = paired(self._scores.get(s["stack"], top.label, top.seeds),
                         self._scores.get(self.baseline_id, top.label, top.seeds))
            test = self._held_out[1]
            lines.append(f"stack {s['stack'][:8]} of {len(s['members'])} atoms: val {val or 'not measured'}, "
                         f"sum of add-one {s['sum_add_one']:+.3g}; test {test or 'not measured'}")
        return lines

    def _sizes(self) -> list[tuple[str, int, int]]:
        return [(name, *getattr(self, name).shape) for name in TABLES]

    def __repr__(self) -> str:
        sizes = ", ".join(f"{name} {rows}x{columns}" for name, rows, columns in self._sizes())
        return "\n".join([*self._headline(), f"tables: {sizes}"])

    def _repr_html_(self) -> str:
        head = "".join(f"<div>{html.escape(line)}</div>" for line in self._headline())
        rows = "".join(f"<tr><td><code>run.{name}</code></td><td>{rows}</td><td>{columns}</td></tr>"
                       for name, rows, columns in self._sizes())
        return f"{head}<table><tr><th>table</th><th>rows</th><th>columns</th></tr>{rows}</table>"

    def close(self) -> None:
        self.store.close()
