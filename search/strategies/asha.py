"""Successive halving over a population (the first version's search): noise, rungs, acceptance, combine.

Stages, each resumable from the store: `noise` (the baseline on every rung, on the top rung's
seeds: the spread at each rung is the noise decisions there are read against), `search`
(asynchronous successive halving over children from mutations, Optuna knob trials and merges;
acceptance on a one-sided paired test at the top rung; elites re-checked on fresh seeds), then
`combine` (search/strategies/combine.py: the accepted changes stacked, re-tuned, ablated).
Measured on the CPU task it found far less than greedy at equal compute (DESIGN.md): kept as
a choice (`--strategy asha`) for scripts whose noise is large against their effects.
"""
from __future__ import annotations

import heapq
import itertools
import math
import random
from dataclasses import dataclass

from optuna.trial import TrialState

from population.ladder import SMOKE_BUDGET, Ladder, Rung
from population.selection import Member, select_pair, select_parent
from population.stats import Paired, accepts, paired, rank_correlation, spread
from population.store import DecisionKind, Variant
from search import children
from search.context import Search
from search.evaluator import Request
from search.knob_tuning import KnobTuner, study_name
from search.pool import Pool
from search.scheduler import Asha
from search.snapshot import RungView
from search.strategies._base import Outcome, Signal, Steps, Strategy, View
from search.strategies.combine import Combiner
from trainer.errors import UserError
from trainer.result import EvalResult, Status

_DRAWN_ATTEMPTS = 3
_NOISE, _SEARCH, _COMBINE = "noise", "search", "combine"


@dataclass
class Candidate:
    variant: Variant
    rung: int = 0

    @property
    def reference(self) -> str:
        return self.variant.parents[0]


class AshaStrategy(Strategy):
    name = "asha"
    default_ladder = ((0.25, 0.5, 1.0), (1, 2, 3))

    def __init__(self, search) -> None:
        super().__init__(search)
        config = search.config
        self.config, self.ladder, self.baseline = config, search.ladder, search.baseline
        self.rng = random.Random(config.seed)
        self.tuner = KnobTuner(config.storage_url(), config.sampler, config.seed, config.device_kind)
        self.pool = Pool(search)
        self.queue: list[tuple[int, int, Request]] = []
        self._order = itertools.count()
        self.candidates: dict[str, Candidate] = {}
        self.rechecks: dict[str, tuple[str, tuple[int, ...]]] = search.recall("rechecks", {})
        self.trials = search.trials()
        self._ended = False
        self._exhausted = False
        self._combine: Steps | None = None
        self.stage = search.recall("stage", _NOISE)
        noise = search.noise()
        self.asha = Asha(len(self.ladder.rungs), self.ladder.eta, self._margins(noise))
        if self.stage == _NOISE:
            search.set_phase(_NOISE)
            for request in self._noise_requests():
                self._push(-1, request)
        else:
            self._restore()

    # ================================================================ ask / tell
    def ask(self) -> Request | Signal:
        if self._combine is not None:
            return self._combine.ask()
        if self.stage == _SEARCH:
            if self.search.out_of_time and not self._ended:
                self._end_search()
            if not self.queue and not self._no_more_children():
                while not self.queue and self._new_child():
                    pass
        if self.queue:
            return self._pop()
        if self.search.in_flight():
            return Signal.WAIT
        if self.stage == _SEARCH and not self._ended and self._promote(draining=True):
            return self.ask()
        if self.stage == _NOISE:
            return Signal.WAIT
        return self._start_combine()

    def tell(self, request: Request, result: EvalResult) -> None:
        if self.stage == _NOISE:
            if not self.queue and not self.search.in_flight():
                self._measure_noise()
            return
        if self._combine is not None:
            return
        self._handle(request, result)
        self._promote()

    def incumbent(self) -> str:
        members = self.pool.members()
        return members[0].id if members else self.baseline.id

    def outcome(self) -> Outcome:
        return self._combine.value

    def view(self) -> View:
        occupancy = self.asha.occupancy()
        decisions = self.search.decisions()
        promoted = [d.rung for d in decisions if d.kind == DecisionKind.PROMOTED]
        accepted = sum(1 for d in decisions if d.kind == DecisionKind.ACCEPTED and d.variant_id != self.baseline.id)
        running = [str(r.budget) for r in self.search.in_flight()]
        rungs = [RungView(rung.label, len(rung.seeds), running.count(rung.label), occupancy[rung.index],
                          accepted if rung is self.ladder.top else promoted.count(rung.index + 1))
                 for rung in self.ladder.rungs]
        return View(population=self.pool.views(), rungs=rungs, noise=self.search.noise(),
                    fidelity=self.search.recall("fidelity", []))

    # ================================================================ noise
    def _noise_requests(self) -> list[Request]:
        return [Request(self.baseline.id, rung.budget, seed, purpose="noise")
                for rung in self.ladder.rungs for seed in self.ladder.top.seeds]

    def _measure_noise(self) -> None:
        """The baseline's spread at each rung: the paired reference of the first children, and the margin below
        which a child may look worse than its parent and still climb."""
        for request in self._noise_requests():
            result = self.search.result(request)
            if result is None or not result.status.is_ok():
                status = result.status.value if result else "missing"
                raise UserError(f"the baseline failed at {request.budget} seed {request.seed} ({status}: "
                                f"{result.message if result else ''}); see its log under "
                                f"{self.config.run_dir}/logs/{self.baseline.id}")
        top = list(self.search.scores(self.baseline.id, self.ladder.top.budget, self.ladder.top.seeds).values())
        rung_sd = [spread(list(self.search.scores(self.baseline.id, rung.budget, self.ladder.top.seeds).values()))
                   for rung in self.ladder.rungs]
        noise = {"sd": spread(top), "mean": sum(top) / len(top), "n": len(top), "budget": str(self.ladder.top.budget),
                 "rung_sd": rung_sd}
        self.search.record_noise(noise)
        self.search.event(f"baseline val_bpb {noise['mean']:.4f}, seed sd {noise['sd']:.4f} over {noise['n']} seeds "
                          f"at {noise['budget']}")
        self.asha = Asha(len(self.ladder.rungs), self.ladder.eta, self._margins(noise))
        self.stage = _SEARCH
        self.search.remember("stage", _SEARCH)
        self.search.set_phase(_SEARCH)
        self._restore()

    def _margins(self, noise: dict | None) -> list[float]:
        """How much worse than its parent a child may look at each rung below the top and still climb: the
        baseline's seed spread there."""
        noise = noise or {}
        spreads = noise.get("rung_sd") or [noise.get("sd", 0.0)] * len(self.ladder.rungs)
        return [0.0 if sd is None or math.isnan(sd) else sd for sd in spreads]  # one seed has no spread

    # ================================================================ search
    def _restore(self) -> None:
        """Rebuild the search's state from the store: what a resumed search knows."""
        decisions = self.search.decisions()
        final = {d.variant_id for d in decisions if DecisionKind(d.kind).ends_climb()}
        promoted = {}
        for d in decisions:
            if d.kind == DecisionKind.PROMOTED:
                promoted[d.variant_id] = max(promoted.get(d.variant_id, 0), d.rung)
                self.asha.mark_promoted(d.rung - 1, d.variant_id)
            if DecisionKind(d.kind).ends_climb() and d.kind != DecisionKind.ACCEPTED:
                self.asha.close(d.variant_id)
        if not any(d.variant_id == self.baseline.id for d in decisions):
            self.search.decide(self.baseline.id, DecisionKind.ACCEPTED, reason="the baseline")
        for variant in self.search.variants():
            if variant.id == self.baseline.id or variant.origin in ("stack", "ablation") or not variant.parents:
                continue
            for rung in self.ladder.rungs[:-1]:  # every completion counts in its rung's quota, as when live
                score = self._rung_comparison(Candidate(variant), rung)
                if score is not None:
                    self.asha.record(rung.index, variant.id, score.mean)
            if variant.id in final:
                continue
            candidate = Candidate(variant, promoted.get(variant.id, 0))
            self.candidates[variant.id] = candidate
            self._resume_candidate(candidate)
        for variant_id, (reference, seeds) in list(self.rechecks.items()):
            self._enqueue_recheck(variant_id, reference, tuple(seeds))

    def _resume_candidate(self, candidate: Candidate) -> None:
        if candidate.variant.origin != "tune":
            smoke = Request(candidate.variant.id, SMOKE_BUDGET, 0, purpose="smoke")
            result = self.search.result(smoke)
            if result is None:
                self._push(1, smoke)
                return
            if not result.status.is_ok():
                self._handle(smoke, result)
                return
        self._enter_rung(candidate, candidate.rung)

    def _no_more_children(self) -> bool:
        return self._ended or not self.search.searching or self._exhausted

    def _end_search(self) -> None:
        """Time is up: stop making children; keep only the work of candidates already at the top rung."""
        self._ended = True
        top = self.ladder.top.index
        self.queue = [item for item in self.queue if item[0] <= -top]  # top rung and re-checks
        heapq.heapify(self.queue)

    def _push(self, priority: int, request: Request) -> None:
        heapq.heappush(self.queue, (priority, next(self._order), request))

    def _pop(self) -> Request:
        return heapq.heappop(self.queue)[2]

    def _enter_rung(self, candidate: Candidate, rung_index: int) -> None:
        candidate.rung = rung_index
        rung = self.ladder.rungs[rung_index]
        requests = [Request(candidate.variant.id, rung.budget, seed, purpose=f"rung {rung_index}",
                            prune_against=candidate.reference) for seed in rung.seeds]
        running = {r.key for r in self.search.in_flight()}
        missing = [r for r in requests if self.search.result(r) is None and r.key not in running]
        for request in missing:
            self._push(-rung_index, request)
        if not missing and not any(r.variant == candidate.variant.id for r in self.search.in_flight()):
            self._rung_done(candidate)

    def _handle(self, request: Request, result: EvalResult) -> None:
        if request.purpose == "recheck":
            self._recheck_done(request.variant)
            return
        candidate = self.candidates.get(request.variant)
        if candidate is None:
            return
        if request.purpose == "smoke":
            if result.status.is_ok():
                self._enter_rung(candidate, 0)
            else:
                self._decide(candidate, DecisionKind.REFUSED, reason=f"smoke run {result.status.value}: "
                             f"{result.message}", log_tail=_last_lines(result.log_tail))
            return
        if result.status is Status.PRUNED:
            self._decide(candidate, DecisionKind.PRUNED, rung=candidate.rung, reason=f"stopped early: its probe was "
                         f"over {self.config.prune_margin:.0%} worse than its parent's")
        elif result.status.is_failure():
            self._decide(candidate, DecisionKind.FAILED, rung=candidate.rung,
                         reason=f"{result.status.value}: {result.message}", log_tail=_last_lines(result.log_tail))
        else:
            self._rung_done(candidate)

    def _rung_comparison(self, candidate: Candidate, rung: Rung) -> Paired | None:
        mine = self.search.scores(candidate.variant.id, rung.budget, rung.seeds)
        if len(mine) < len(rung.seeds):
            return None
        return paired(mine, self.search.scores(candidate.reference, rung.budget, rung.seeds))

    def _rung_done(self, candidate: Candidate) -> None:
        rung = self.ladder.rungs[candidate.rung]
        comparison = self._rung_comparison(candidate, rung)
        if comparison is None:
            return  # seeds still running
        variant = candidate.variant
        trial = self.trials.get(variant.id)
        mean = sum(self.search.scores(variant.id, rung.budget, rung.seeds).values()) / len(rung.seeds)
        if trial:
            self.tuner.report(trial[1], rung.index, mean)
        self.search.remember("fidelity", fidelity_rows(self.search.variants(), self.search, self.ladder))
        if rung is self.ladder.top:
            accepted = accepts(comparison, self.config.alpha)
            self._decide(candidate, DecisionKind.ACCEPTED if accepted else DecisionKind.REJECTED, rung=rung.index,
                         comparison=comparison, value=mean)
            if accepted:
                self._admit()
        else:
            # Recorded before any rejection: a rung's quota counts every candidate that completed it,
            # so one good child among many rejected ones is promoted without waiting for peers.
            self.asha.record(rung.index, variant.id, comparison.mean)
            margin = self.asha.margins[rung.index]
            if comparison.mean >= margin:
                self._decide(candidate, DecisionKind.REJECTED, rung=rung.index, comparison=comparison,
                             reason=f"worse than its parent by more than the seed noise at this rung ({margin:.4g})")

    def _promote(self, draining: bool = False) -> bool:
        """Move candidates up the ladder; whether any moved."""
        moved = False
        for variant_id, rung in self.asha.promotions(draining):
            candidate = self.candidates.get(variant_id)
            if candidate is None or (self._ended and rung < self.ladder.top.index):
                continue
            self.search.decide(variant_id, DecisionKind.PROMOTED, rung=rung, reference=candidate.reference)
            self._enter_rung(candidate, rung)
            moved = True
        return moved

    def _decide(self, candidate: Candidate, kind: DecisionKind, *, rung: int | None = None,
                comparison: Paired | None = None, reason: str = "", value: float | None = None, **extra) -> None:
        variant = candidate.variant
        self.search.decide(variant.id, kind, rung=rung, reference=candidate.reference, comparison=comparison,
                           reason=reason, **extra)
        self.candidates.pop(variant.id, None)
        self.asha.close(variant.id)
        self.queue = [item for item in self.queue if item[2].variant != variant.id]
        heapq.heapify(self.queue)
        trial = self.trials.get(variant.id)
        if trial:
            state = {DecisionKind.ACCEPTED: TrialState.COMPLETE,
                     DecisionKind.REJECTED: TrialState.COMPLETE if value is not None else TrialState.PRUNED,
                     DecisionKind.FAILED: TrialState.FAIL, DecisionKind.REFUSED: TrialState.FAIL}.get(kind,
                                                                                               TrialState.PRUNED)
            self.tuner.tell(trial[1], state, value)

    def _admit(self) -> None:
        self.pool.trim(self.config.population)
        accepted = self.search.recall("accepted_since_recheck", 0) + 1
        if accepted >= self.config.recheck_every:
            accepted = 0
            self._start_recheck()
        self.search.remember("accepted_since_recheck", accepted)

    # ================================================================ re-checks
    def _start_recheck(self) -> None:
        """Re-run the best unchecked elite and its reference on fresh seeds; retire it if the gain fades."""
        checked = {d.variant_id for d in self.search.decisions()
                   if d.kind in (DecisionKind.CONFIRMED, DecisionKind.RETIRED)}
        elites = [v for v in self.pool.members() if v.id != self.baseline.id and v.id not in checked
                  and v.id not in self.rechecks]
        if not elites:
            return
        elite = elites[0]
        count = self.search.recall("recheck_count", 0)
        seeds = self.ladder.recheck_seeds(count * self.config.recheck_seeds, self.config.recheck_seeds)
        self.search.remember("recheck_count", count + 1)
        self.rechecks[elite.id] = (elite.parents[0], seeds)
        self.search.remember("rechecks", self.rechecks)
        self._enqueue_recheck(elite.id, elite.parents[0], seeds)

    def _enqueue_recheck(self, elite: str, reference: str, seeds: tuple[int, ...]) -> None:
        top = self.ladder.top
        running = {r.key for r in self.search.in_flight()}
        for request in [Request(v, top.budget, s, purpose="recheck") for v in (elite, reference) for s in seeds]:
            if self.search.result(request) is None and request.key not in running:
                self._push(-top.index - 1, request)
        self._recheck_done(elite)

    def _recheck_done(self, variant_id: str) -> None:
        for elite, (reference, seeds) in list(self.rechecks.items()):
            if variant_id not in (elite, reference):
                continue
            pending = [*self.search.in_flight(), *(item[2] for item in self.queue)]
            if any(r.variant in (elite, reference) and r.purpose == "recheck" for r in pending):
                continue
            top = self.ladder.top
            all_seeds = top.seeds + tuple(seeds)
            comparison = paired(self.search.scores(elite, top.budget, all_seeds),
                                self.search.scores(reference, top.budget, all_seeds))
            kind = DecisionKind.CONFIRMED if accepts(comparison, self.config.alpha) else DecisionKind.RETIRED
            self.search.decide(elite, kind, reference=reference, comparison=comparison, fresh_seeds=list(seeds),
                               reason="re-checked on fresh seeds")
            del self.rechecks[elite]
            self.search.remember("rechecks", self.rechecks)

    # ================================================================ children
    def _new_child(self) -> bool:
        """Propose, validate and queue one child; False when nothing can be proposed any more.

        The kind is drawn by the configured shares and the parent by fitness-and-novelty-aware
        selection; when that fails a few times, every member is tried in turn before giving up."""
        members = self.pool.records()
        shares = (self.config.tune_share, self.config.merge_share)
        draw = self.rng.random()
        kind = "tune" if draw < shares[0] else "merge" if draw < sum(shares) else "structural"
        drawn = [(kind, None)] * _DRAWN_ATTEMPTS
        fallbacks = [(k, m) for m in sorted(members, key=lambda m: m.fitness) for k in ("structural", "tune")
                     if k != "tune" or self.config.tune_share > 0]
        for kind, member in drawn + fallbacks:
            try:
                if self._queue_child(self._make(kind, members, member)):
                    return True
            except children.NoChild:
                continue
        if not self.candidates and not self.search.in_flight() and not self.queue:
            self._exhausted = True  # nobody left who could join the population and open new proposals
            self.search.event("no new child could be proposed: every member's mutations have been tried")
        return False

    def _make(self, kind: str, members: list[Member], parent: Member | None) -> children.Child:
        if kind == "merge":
            pair = select_pair(members, self.rng)
            if pair is None:
                raise children.NoChild("no two members with different changes to merge")
            fitness = {m.id: m.fitness for m in members}
            return children.merged(self.baseline.source, self.search.variant(pair[0].id),
                                   self.search.variant(pair[1].id), fitness)
        chosen = self.search.variant((parent or select_parent(members, self.rng)).id)
        if kind == "tune":
            child = children.tune(self.tuner, chosen)
            if child.source == chosen.source:  # the study's first trial: the parent's own values, measured already
                self.tuner.tell(child.trial_id, TrialState.COMPLETE, self.pool.fitness(chosen))
                child = children.tune(self.tuner, chosen)
            return child
        child = self.search.propose(chosen)
        if child is None:
            raise children.NoChild(f"the source has nothing more for {chosen.id[:8]}")
        return child

    def _queue_child(self, child: children.Child) -> bool:
        parent = self.search.variant(child.parents[0])
        variant, new = self.search.add_variant(child.source, parents=child.parents, mutation=child.mutation,
                                               origin=child.origin)
        if not new:
            if child.trial_id is not None:
                self.tuner.tell(child.trial_id, TrialState.PRUNED)
            self.search.event(f"duplicate of {variant.id[:8]} skipped ({child.origin})", quiet=True)
            return False
        self.search.count_child()
        if child.trial_id is not None:
            self.search.link_trial(variant.id, study_name(parent.id), child.trial_id)
            self.trials[variant.id] = (study_name(parent.id), child.trial_id)
        candidate = Candidate(variant)
        self.candidates[variant.id] = candidate
        if child.refusal:
            self._decide(candidate, DecisionKind.REFUSED, reason=child.refusal)
            return True
        self.search.event(f"{variant.id[:8]} {child.origin} from {parent.id[:8]}: {child.mutation.description[:80]}")
        self._resume_candidate(candidate)
        return True

    # ================================================================ combine
    def _start_combine(self) -> Signal | Request:
        """The search is over: prune who is left, then the combine step."""
        waiting = set(self.asha.waiting())
        for candidate in list(self.candidates.values()):
            reason = "not among the best 1/eta of its rung when the search ended" if candidate.variant.id in waiting \
                else "the search phase ended before it reached the top rung"
            self._decide(candidate, DecisionKind.PRUNED, reason=reason)
        self.stage = _COMBINE
        self.search.remember("stage", _COMBINE)
        self.search.set_phase(_COMBINE)
        self._combine = Steps(self.search, Combiner(self.search, self.tuner, self.trials).run())
        return self._combine.ask()


def fidelity_rows(variants: list[Variant], search: Search, ladder: Ladder) -> list[dict]:
    """Spearman and Kendall between consecutive rungs, over the variants that completed both."""
    rows = []
    for low, high in zip(ladder.rungs, ladder.rungs[1:]):
        pairs = []
        for variant in variants:
            a = search.scores(variant.id, low.budget, low.seeds)
            b = search.scores(variant.id, high.budget, high.seeds)
            if len(a) == len(low.seeds) and len(b) == len(high.seeds):
                pairs.append((sum(a.values()) / len(a), sum(b.values()) / len(b)))
        correlation = rank_correlation([p[0] for p in pairs], [p[1] for p in pairs]) if pairs else None
        rows.append({"low": low.label, "high": high.label, "n": len(pairs),
                     "spearman": correlation[0] if correlation else None,
                     "kendall": correlation[1] if correlation else None})
    return rows


def _last_lines(text: str, count: int = 5) -> str:
    return "\n".join(text.strip().splitlines()[-count:])
