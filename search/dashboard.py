"""The dashboard's data: a Snapshot of a running search, and the rank correlation between rungs."""
from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING

from population.stats import rank_correlation
from population.store import Variant
from search.evaluator import Evaluator
from search.ladder import Ladder
from search.snapshot import RungView, SlotView, Snapshot

if TYPE_CHECKING:
    from search.evolve import Evolution


def fidelity_rows(variants: list[Variant], evaluator: Evaluator, ladder: Ladder) -> list[dict]:
    """Spearman and Kendall between consecutive rungs, over the variants that completed both."""
    rows = []
    for low, high in zip(ladder.rungs, ladder.rungs[1:]):
        pairs = []
        for variant in variants:
            a = evaluator.scores(variant.id, low.budget, low.seeds)
            b = evaluator.scores(variant.id, high.budget, high.seeds)
            if len(a) == len(low.seeds) and len(b) == len(high.seeds):
                pairs.append((sum(a.values()) / len(a), sum(b.values()) / len(b)))
        correlation = rank_correlation([p[0] for p in pairs], [p[1] for p in pairs]) if pairs else None
        rows.append({"low": low.label, "high": high.label, "n": len(pairs),
                     "spearman": correlation[0] if correlation else None,
                     "kendall": correlation[1] if correlation else None})
    return rows


def build_snapshot(evo: Evolution) -> Snapshot:
    store, ladder, config = evo.store, evo.ladder, evo.config
    meta = store.meta()
    finished = evo.evaluator.finished()  # in memory: re-reading every stored result each second would be wasted I/O
    decisions = store.decisions()
    slots = []
    for running in evo.executor.running():
        request = evo.evaluator.request_for(running.job.key)
        if request is None:
            continue
        variant = evo.variants.get(request.variant, evo.baseline)
        name = running.slot.device if running.slot.device.startswith("cuda") else f"{running.slot.device}#{len(slots)}"
        slots.append(SlotView(name, request.variant[:8], variant.origin, request.purpose, str(request.budget),
                              request.seed, running.progress, time.time() - running.started))
    occupancy = evo.asha.occupancy() if evo.asha else [0] * len(ladder.rungs)
    promoted = Counter(d.rung for d in decisions if d.kind == "promoted")
    accepted = sum(1 for d in decisions if d.kind == "accepted" and d.variant_id != evo.baseline.id)
    in_flight = Counter(str(r.budget) for r in evo.evaluator.in_flight())
    rungs = [RungView(rung.label, len(rung.seeds), in_flight[rung.label], occupancy[rung.index],
                      accepted if rung is ladder.top else promoted.get(rung.index + 1, 0)) for rung in ladder.rungs]
    remaining = None
    if config.time_limit is not None:
        remaining = max(0.0, config.time_limit - evo.search_seconds) if evo.phase in ("noise", "search") else 0.0
    return Snapshot(
        run=str(config.run_dir), phase=evo.phase, elapsed=time.time() - evo.started, remaining=remaining,
        children=evo.children_made,
        children_limit=config.generations * config.population if config.generations else None,
        slots=slots, rungs=rungs,
        evaluations=dict(Counter(r.status.value for r in finished)),
        decisions=dict(Counter(d.kind for d in decisions)),
        population=evo.pool.views(), noise=meta.get("noise"), fidelity=meta.get("fidelity", []),
        llm_cost_usd=evo.llm_cost,
        compute_seconds=sum(r.wall_seconds for r in finished),
        recent=list(evo.recent), result=meta.get("result"), updated=time.time())
