"""The dashboard's data: a Snapshot of a running search, built from what the driver hands over (no driver object)."""
from __future__ import annotations

import time
from collections import Counter

from population.store import Decision, DecisionKind, Variant
from search.evaluator import Evaluator
from search.executors import Executor
from search.snapshot import SlotView, Snapshot
from search.strategies._base import View
from trainer.result import EvalResult


def running_slots(executor: Executor, evaluator: Evaluator, variants: dict[str, Variant]) -> list[SlotView]:
    """What runs where, in every phase."""
    slots = []
    for running in executor.running():
        request = evaluator.request_for(running.job.key)
        if request is None:
            continue
        variant = variants.get(request.variant)
        name = running.slot.device if running.slot.device.startswith("cuda") else f"{running.slot.device}#{len(slots)}"
        slots.append(SlotView(name, request.variant[:8], variant.origin if variant else "?", request.purpose,
                              str(request.budget), request.seed, running.progress, time.time() - running.started))
    return slots


def build_snapshot(*, run: str, phase: str, elapsed: float, remaining: float | None, children: int,
                   children_limit: int | None, slots: list[SlotView], finished: list[EvalResult],
                   decisions: list[Decision], view: View | None, llm_cost: float, recent: list[str],
                   result: dict | None, strategy: str) -> Snapshot:
    view = view or View()
    kinds = Counter(d.kind for d in decisions if d.kind != DecisionKind.INCUMBENT)
    return Snapshot(
        run=run, phase=phase, elapsed=elapsed, remaining=remaining, children=children, children_limit=children_limit,
        slots=slots, rungs=view.rungs, evaluations=dict(Counter(r.status.value for r in finished)),
        decisions=dict(kinds), population=view.population, noise=view.noise, fidelity=view.fidelity,
        llm_cost_usd=llm_cost, compute_seconds=sum(r.wall_seconds for r in finished), recent=list(recent),
        result=result, updated=time.time(), strategy=strategy)
