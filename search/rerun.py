"""More evaluations for a finished run: extra ablation seeds, and transfer to another scale.

Both reopen the run with the options it was searched with (dataset, device kind, ladder,
validation size) and add evaluations to the same store under the run's lock, through the
same evaluator and executors as `search evolve`, so the analysis reads them like any other.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from mutations.diff import structural_diff
from mutations.knobs import extract_knobs, set_knobs
from population.stats import Paired, paired
from population.store import Store, Variant
from search.config import EvolveConfig
from search.evaluator import Evaluator, Request
from population.ladder import Ladder
from search.context import knob_values
from search.driver import make_executor, trust_policy
from trainer.budget import Budget
from trainer.errors import UserError
from trainer.result import EvalResult
from trainer.runner import build_spec

# Seed ranges of their own, so extra seeds never coincide with the search's, re-checks' or test's.
_ABLATION_SEEDS_START = 500
_TRANSFER_SEEDS_START = 2000


class Rerun:
    """A finished run, open for more evaluations (the caller holds the run's lock)."""

    def __init__(self, store: Store, run_dir: Path, workers: int | None = None,
                 on_finish: Callable[[Request, EvalResult], None] | None = None) -> None:
        meta = store.meta()
        if "result" not in meta:
            raise UserError(f"{run_dir} has no combined result yet: let `search evolve` finish (or resume it) first")
        self.store, self.meta = store, meta
        self.config = replace(EvolveConfig.from_dict(meta["options"]), workers=workers or None)
        self.ladder = Ladder.from_dict(meta["ladder"])
        template = build_spec(self.config.top_budget, device=self.config.device, dataset=self.config.dataset)
        if self.config.eval_tokens:
            template = replace(template, profile=replace(template.profile, eval_tokens=self.config.eval_tokens))
        self.executor = make_executor(self.config)
        self.evaluator = Evaluator(store, self.executor, template, run_dir, on_finish=on_finish,
                                   timeout_s=self.config.timeout, trust=trust_policy(self.config))
        self.variants = {v.id: v for v in store.variants()}
        self.baseline = self.variants[meta["baseline"]["id"]]
        self.stack = self.variants[meta["result"]["stack"]]

    def close(self) -> None:
        self.executor.close()

    # ---------------------------------------------------------------- ablation seeds
    def ablation_variants(self) -> list[Variant]:
        """The baseline, the stack, and every member's alone and without variants."""
        ids = [self.baseline.id, self.stack.id]
        for row in self.meta["result"]["ablation"]:
            ids += [row["alone"]] + ([row["without"]] if row.get("without") else [])
        return [self.variants[i] for i in dict.fromkeys(ids)]

    def add_ablation_seeds(self, count: int) -> tuple[int, ...]:
        """Run the ablation's variants on `count` more seeds at the top budget; the seeds used."""
        start = self.config.seed + _ABLATION_SEEDS_START
        done = {e.seed for e in self.store.evaluations(self.stack.id)
                if e.budget == self.ladder.top.label and e.split == "val" and start <= e.seed < start + 500}
        first = self.config.seed + _ABLATION_SEEDS_START + len(done)
        seeds = tuple(range(first, first + count))
        self.evaluator.run_all([(Request(v.id, self.ladder.top.budget, s, purpose="ablation"), v.source)
                                for v in self.ablation_variants() for s in seeds])
        return seeds

    # ---------------------------------------------------------------- held-out runs
    def test(self, variant_ids: list[str], seeds: tuple[int, ...]) -> None:
        """These variants on the held-out test split at the full budget, on these seeds (what finished is kept)."""
        self.evaluator.run_all([(Request(v, self.ladder.top.budget, s, split="test", purpose="test"),
                                 self.variants[v].source) for v in dict.fromkeys(variant_ids) for s in seeds])

    def test_scores(self, variant_id: str, seeds: tuple[int, ...]) -> dict[int, float]:
        return self.evaluator.scores(variant_id, self.ladder.top.budget, seeds, "test")

    # ---------------------------------------------------------------- transfer
    def transfer(self, overrides: dict[str, str], budget: Budget, seeds: int, per_atom: bool) -> dict:
        """The baseline and the stack (and, per_atom, each member alone) with knob overrides, at `budget` on
        fresh paired seeds: does the gain hold at that scale?"""
        pairs = [("stack", self.stack)]
        if per_atom:
            pairs += [(row["atom"], self.variants[row["alone"]]) for row in self.meta["result"]["ablation"]]
        base = self._overridden(self.baseline, overrides)
        chosen = [(name, self._overridden(v, overrides)) for name, v in pairs]
        seed_list = tuple(range(self.config.seed + _TRANSFER_SEEDS_START,
                                self.config.seed + _TRANSFER_SEEDS_START + seeds))
        self.evaluator.run_all([(Request(v.id, budget, s, purpose="transfer"), v.source)
                                for v in [base, *(v for _, v in chosen)] for s in seed_list])
        reference = self.evaluator.scores(base.id, budget, seed_list)
        rows = [{"name": name, "variant": v.id, **_numbers(paired(self.evaluator.scores(v.id, budget, seed_list),
                                                                  reference))} for name, v in chosen]
        record = {"set": overrides, "budget": str(budget), "seeds": list(seed_list), "baseline": base.id,
                  "baseline_val_bpb": _mean(reference), "rows": rows}
        self.store.set_meta("transfers", [*self.meta.get("transfers", []), record])
        return record

    def _overridden(self, variant: Variant, overrides: dict[str, str]) -> Variant:
        names = {k.name for k in extract_knobs(variant.source, self.config.device_kind)}
        missing = [name for name in overrides if name not in names]
        if missing:
            raise UserError(f"{variant.id[:8]} ({variant.origin}) has no knob {missing[0]}: see `search knobs` for "
                            "the names (a knob must exist in the baseline and in the stack)")
        try:
            source = set_knobs(variant.source, {k: _literal(v) for k, v in overrides.items()}, self.config.device_kind)
        except UserError as error:
            raise UserError(f"--set on {variant.id[:8]}: {error}") from None
        mutation = structural_diff(variant.source, source, name="transfer",
                                   description=", ".join(f"{k}={v}" for k, v in overrides.items()))
        made, _ = self.store.add_variant(source, knobs=knob_values(source, self.config.device_kind), parents=(variant.id,),
                                         mutation=mutation.to_dict(), origin="transfer")
        return self.variants.setdefault(made.id, made)


def _literal(text: str) -> object:
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            continue
    return {"true": True, "false": False}.get(text.lower(), text)


def _numbers(comparison: Paired | None) -> dict:
    return comparison.to_dict() if comparison else {"n": 0}


def _mean(scores: dict[int, float]) -> float | None:
    return sum(scores.values()) / len(scores) if scores else None
