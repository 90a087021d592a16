"""The evolve loop: measure the baseline's noise, evolve a population through the rungs, then combine.

Phases, each resumable from the store: `noise` (the baseline on every rung, and on several
seeds at the top: the spread is the noise every decision is read against), `search`
(asynchronous successive halving over children from mutations, knob trials and merges;
acceptance on a one-sided paired test at the top rung; elites re-checked on fresh seeds),
then `combine` and `test` (search/combine.py). The driver is the only writer of the store
and of the Optuna studies; evaluations run on an executor.
"""
from __future__ import annotations

import heapq
import itertools
import math
import os
import platform
import random
import signal
import time
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path

from optuna.trial import TrialState

from mutations.sources import MutationSource, make_source
from population.selection import Member, select_pair, select_parent
from population.stats import Paired, paired, spread
from population.store import Store, Variant
from search import children
from search.children import FINAL
from search.config import EvolveConfig, check_resume
from search.evaluator import Evaluator, Request, prune_rule
from search.executors import Executor, LocalExecutor, RayExecutor, local_slots
from search.dashboard import build_snapshot, fidelity_rows
from search.knob_tuning import KnobTuner, knob_values, study_name
from search.ladder import SMOKE_BUDGET, Ladder, Rung
from search.lock import RunLock
from search.pool import Pool
from search.scheduler import Asha
from search.progress import Reporter
from trainer.errors import UserError
from trainer.result import EvalResult, Status
from trainer.runner import build_spec

_SNAPSHOT_EVERY = 5.0
_DRAWN_ATTEMPTS = 3
_RECENT = 8


class Stopped(Exception):
    """Ctrl-C or SIGTERM: running evaluations were killed and will run again on resume."""


@dataclass
class Candidate:
    variant: Variant
    rung: int = 0

    @property
    def reference(self) -> str:
        return self.variant.parents[0]


def load_baseline(config: EvolveConfig) -> str:
    from trainer.baselines import BASELINE

    path = config.baseline or BASELINE
    if not Path(path).is_file():
        raise UserError(f"no such baseline: {path}; pass the path of a train.py, or nothing for the built-in one")
    return Path(path).read_text()


def make_executor(config: EvolveConfig) -> Executor:
    if config.executor == "ray":
        gpus = 1 if config.device_kind == "cuda" else 0
        return RayExecutor(address=config.ray_address, gpus_per_task=gpus, slots=config.workers)
    return LocalExecutor(local_slots(config.device, config.workers))


class Evolution:
    def __init__(self, config: EvolveConfig, reporter: Reporter, source: MutationSource | None = None,
                 executor: Executor | None = None) -> None:
        self.config, self.reporter = config, reporter
        self.rng = random.Random(config.seed)
        # Objects instead of config.mutator / config.executor (tests, benchmarks, the Python API).
        self._given_source, self._given_executor = source, executor

    # ================================================================ setup
    def run(self) -> dict:
        """The whole search; returns the final result (also stored as meta "result")."""
        with RunLock(self.config.run_dir):
            self._open()
            previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
            try:
                return self._phases()
            except KeyboardInterrupt:
                self.evaluator.stop()
                self.store.set_meta("snapshot", {**build_snapshot(self).to_dict(), "phase": "stopped"})
                raise Stopped() from None
            finally:
                signal.signal(signal.SIGTERM, previous)
                self.executor.close()
                self.store.close()

    def _open(self) -> None:
        config = self.config
        self.store = Store(config.storage_url())
        meta = self.store.meta()
        if "options" in meta:
            stored = EvolveConfig.from_dict(meta["options"])
            check_resume(stored, config)
            self.reporter.event(f"resuming {config.run_dir} (phase {meta.get('phase', 'noise')})")
        self.store.set_meta("options", config.to_dict())
        self.store.set_meta("versions", _versions())
        self.store.set_meta("hardware", {"machine": platform.machine(), "processor": platform.processor(),
                                         "python": platform.python_version(), "cpus": _cpu_count(),
                                         "device": config.device_kind})
        self.phase = meta.get("phase", "noise")
        self.started = time.time() - meta.get("elapsed", 0.0)
        self.search_seconds = meta.get("search_seconds", 0.0)
        self.baseline_source = load_baseline(config)
        self.baseline, _ = self.store.add_variant(self.baseline_source, knobs=knob_values(self.baseline_source, config),
                                                  origin="baseline")
        self.variants = {v.id: v for v in self.store.variants()}
        self.asha = None
        self.store.set_meta("baseline", {"id": self.baseline.id, "path": str(config.baseline or "built-in"),
                                         "hash": config.baseline_hash})
        self.ladder = Ladder.build(config.top_budget, config.fractions, config.seeds, config.eta, config.seed)
        template = build_spec(config.top_budget, device=config.device, dataset=config.dataset,
                              log=self.reporter.event)
        if config.eval_tokens:
            template = replace(template, profile=replace(template.profile, eval_tokens=config.eval_tokens))
        self.executor = self._given_executor or make_executor(config)
        self.evaluator = Evaluator(self.store, self.executor, template, config.run_dir,
                                   on_finish=self._on_finish, timeout_s=config.timeout)
        if self.evaluator.requeued:
            self.reporter.event(f"re-queued {self.evaluator.requeued} evaluations a stopped search left running")
        self.pool = Pool(self.store, self.evaluator, self.ladder, self.baseline, self.variants)
        self.tuner = KnobTuner(config.storage_url(), config.sampler, config.seed, config.device_kind)
        self.source = self._given_source or make_source(
            config.mutator, seed=config.seed, max_cost_usd=config.max_llm_cost,
            record_path=Path(config.run_dir) / "llm.jsonl", device=config.device_kind)
        self.recent: list[str] = []
        self.llm_cost = meta.get("llm_cost_usd", 0.0)
        self.children_made = meta.get("children", 0)
        self._last_snapshot = 0.0

    def _phases(self) -> dict:
        from search.combine import Combiner

        if self.phase == "done":
            self.reporter.event(f"{self.config.run_dir} is finished: see `search status {self.config.run_dir}`")
            return self.store.meta()["result"]
        if self.phase == "noise":
            self.set_phase("noise")
            self._measure_noise()
            self.phase = "search"
        if self.phase == "search":
            self.set_phase("search")
            self._search()
        self.set_phase("combine")
        result = Combiner(self).run()
        self.set_phase("done")
        return result

    # ================================================================ noise
    def _measure_noise(self) -> None:
        """The baseline on every rung on the top rung's seeds: the paired reference of the first
        children, and the seed noise at each rung that the search's decisions are read against."""
        work = [(Request(self.baseline.id, rung.budget, seed, purpose="noise"), self.baseline_source)
                for rung in self.ladder.rungs for seed in self.ladder.top.seeds]
        self.evaluator.run_all(work)
        for request, _ in work:
            result = self.evaluator.result(request)
            if result is None or not result.status.is_ok():
                status = result.status.value if result else "missing"
                message = result.message if result else ""
                raise UserError(f"the baseline failed at {request.budget} seed {request.seed} ({status}: {message}); "
                                f"see its log under {Path(self.config.run_dir) / 'logs' / self.baseline.id}")
        top = list(self.evaluator.scores(self.baseline.id, self.ladder.top.budget, self.ladder.top.seeds).values())
        rung_sd = [spread(list(self.evaluator.scores(self.baseline.id, rung.budget, self.ladder.top.seeds).values()))
                   for rung in self.ladder.rungs]
        noise = {"sd": spread(top), "mean": sum(top) / len(top), "n": len(top), "budget": str(self.ladder.top.budget),
                 "rung_sd": rung_sd}
        self.store.set_meta("noise", noise)
        self.event(f"baseline val_bpb {noise['mean']:.4f}, seed sd {noise['sd']:.4f} over {noise['n']} seeds "
                    f"at {noise['budget']}")

    # ================================================================ search
    def _search(self) -> None:
        self._restore()
        phase_started = time.time() - self.search_seconds
        while True:
            self.search_seconds = time.time() - phase_started
            if self._time_up() and not self._ended:
                self._end_search()
            self._fill_slots()
            if not self.evaluator.in_flight() and not self.queue:
                if self._ended or not self._promote(draining=True):
                    break  # nothing running, nothing queued, no child to propose and nobody left to promote
                continue
            for request, result in self.evaluator.poll(timeout=1.0):
                self._handle(request, result)
            self._promote()
            self._snapshot()
        waiting = set(self.asha.waiting())
        for candidate in list(self.candidates.values()):
            reason = "not among the best 1/eta of its rung when the search ended" if candidate.variant.id in waiting \
                else "the search phase ended before it reached the top rung"
            self._decide(candidate, "pruned", reason=reason)
        self.store.set_meta("search_seconds", self.search_seconds)

    def _restore(self) -> None:
        """Rebuild the search's state from the store: what a resumed search knows."""
        self.asha = Asha(len(self.ladder.rungs), self.ladder.eta, self._margins())
        self.queue: list[tuple[int, int, Request, str]] = []
        self._order = itertools.count()
        self._ended = False
        self._exhausted = False
        self.accepted_since_recheck = 0
        self.rechecks: dict[str, tuple[str, tuple[int, ...]]] = self.store.meta().get("rechecks_running", {})
        decisions = self.store.decisions()
        final = {d.variant_id for d in decisions if d.kind in FINAL}
        promoted = {}
        for d in decisions:
            if d.kind == "promoted":
                promoted[d.variant_id] = max(promoted.get(d.variant_id, 0), d.rung)
                self.asha.mark_promoted(d.rung - 1, d.variant_id)
            if d.kind in FINAL and d.kind != "accepted":
                self.asha.close(d.variant_id)
        self.variants.update({v.id: v for v in self.store.variants()})
        self.trials = self.store.trials()
        if not any(d.variant_id == self.baseline.id for d in decisions):
            self.store.decide(self.baseline.id, "accepted", detail={"reason": "the baseline"})
        self.candidates: dict[str, Candidate] = {}
        for variant in self.variants.values():
            if variant.id == self.baseline.id:
                continue
            for rung in self.ladder.rungs[:-1] if variant.parents else ():  # every completion counts in its
                score = self._rung_comparison(Candidate(variant), rung)  # rung's quota, as when live
                if score is not None:
                    self.asha.record(rung.index, variant.id, score.mean)
            if variant.id in final:
                continue
            candidate = Candidate(variant, promoted.get(variant.id, 0))
            self.candidates[variant.id] = candidate
            self._resume_candidate(candidate)
        for variant_id, (reference, seeds) in list(self.rechecks.items()):
            self._enqueue_recheck(variant_id, reference, tuple(seeds))

    def _margins(self) -> list[float]:
        """How much worse than its parent a child may look at each rung below the top and still climb:
        the baseline's seed spread there (runs stored before it was measured per rung: the top's)."""
        noise = self.store.meta().get("noise", {})
        spreads = noise.get("rung_sd") or [noise.get("sd", 0.0)] * len(self.ladder.rungs)
        return [0.0 if math.isnan(sd) else sd for sd in spreads]  # one seed has no spread

    def _resume_candidate(self, candidate: Candidate) -> None:
        if self._needs_smoke(candidate.variant):
            smoke = Request(candidate.variant.id, SMOKE_BUDGET, 0, purpose="smoke")
            result = self.evaluator.result(smoke)
            if result is None:
                self._push(1, smoke, candidate.variant.source)
                return
            if not result.status.is_ok():
                self._handle(smoke, result)
                return
        self._enter_rung(candidate, candidate.rung)

    def _needs_smoke(self, variant: Variant) -> bool:
        return variant.origin not in ("tune", "baseline")

    def _time_up(self) -> bool:
        return self.config.time_limit is not None and self.search_seconds >= self.config.time_limit

    def _enough_children(self) -> bool:
        """After GENERATIONS x POPULATION children no more are made; those made still climb the rungs."""
        return self.config.generations is not None and \
            self.children_made >= self.config.generations * self.config.population

    def _end_search(self) -> None:
        """Time is up: stop making children; keep only the work of candidates already at the top rung."""
        self._ended = True
        top = self.ladder.top.index
        self.queue = [item for item in self.queue if item[0] <= -top]  # top rung and re-checks
        heapq.heapify(self.queue)
        self.event("search time is up: finishing the top rung's evaluations")

    # ---------------------------------------------------------------- scheduling
    def _push(self, priority: int, request: Request, source: str) -> None:
        heapq.heappush(self.queue, (priority, next(self._order), request, source))

    def _no_more_children(self) -> bool:
        return self._ended or self._enough_children() or self._exhausted

    def _fill_slots(self) -> None:
        """Start queued work on free slots, and propose children for the slots left while allowed."""
        while self.executor.free_slots() > 0:
            if not self.queue and (self._no_more_children() or not self._new_child()):
                return
            if self.queue:
                _, _, request, source = heapq.heappop(self.queue)
                reference = self._reference_result(request)
                self.evaluator.submit(request, source, prune_rule(reference, self.config.prune_margin))

    def _reference_result(self, request: Request) -> EvalResult | None:
        candidate = self.candidates.get(request.variant)
        if candidate is None or request.purpose == "smoke":
            return None
        return self.evaluator.result(Request(candidate.reference, request.budget, request.seed))

    def _enter_rung(self, candidate: Candidate, rung_index: int) -> None:
        candidate.rung = rung_index
        rung = self.ladder.rungs[rung_index]
        requests = [Request(candidate.variant.id, rung.budget, seed, purpose=f"rung {rung_index}") for seed in rung.seeds]
        missing = self.evaluator.missing(requests)
        for request in missing:
            self._push(-rung_index, request, candidate.variant.source)
        if not missing and not any(r.variant == candidate.variant.id for r in self.evaluator.in_flight()):
            self._rung_done(candidate)

    # ---------------------------------------------------------------- results
    def _on_finish(self, request: Request, result: EvalResult) -> None:
        if request.purpose != "smoke":
            shown = f"{result.val_bpb:.4f}" if result.val_bpb is not None else result.status.value
            self.event(f"{request.variant[:8]} {request.purpose} {request.budget} seed {request.seed}: {shown}",
                        quiet=True)

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
                self._decide(candidate, "refused", reason=f"smoke run {result.status.value}: {result.message}",
                             log_tail=_last_lines(result.log_tail))
            return
        if result.status is Status.PRUNED:
            self._decide(candidate, "pruned", rung=candidate.rung,
                         reason=f"stopped early: its probe was over {self.config.prune_margin:.0%} worse than its parent's")
        elif result.status.is_failure():
            self._decide(candidate, "failed", rung=candidate.rung, reason=f"{result.status.value}: {result.message}",
                         log_tail=_last_lines(result.log_tail))
        else:
            self._rung_done(candidate)

    def _rung_comparison(self, candidate: Candidate, rung: Rung) -> Paired | None:
        mine = self.evaluator.scores(candidate.variant.id, rung.budget, rung.seeds)
        if len(mine) < len(rung.seeds):
            return None
        return paired(mine, self.evaluator.scores(candidate.reference, rung.budget, rung.seeds))

    def _rung_done(self, candidate: Candidate) -> None:
        rung = self.ladder.rungs[candidate.rung]
        comparison = self._rung_comparison(candidate, rung)
        if comparison is None:
            return  # seeds still running
        variant = candidate.variant
        trial = self.trials.get(variant.id)
        mean = sum(self.evaluator.scores(variant.id, rung.budget, rung.seeds).values()) / len(rung.seeds)
        if trial:
            self.tuner.report(trial[1], rung.index, mean)
        self.store.set_meta("fidelity", fidelity_rows(list(self.variants.values()), self.evaluator, self.ladder))
        if rung is self.ladder.top:
            accepted = comparison.better(self.config.alpha)
            self._decide(candidate, "accepted" if accepted else "rejected", rung=rung.index, comparison=comparison,
                         value=mean)
            if accepted:
                self._admit(variant)
        else:
            # Recorded before any rejection: a rung's quota counts every candidate that completed it,
            # so one good child among many rejected ones is promoted without waiting for peers.
            self.asha.record(rung.index, variant.id, comparison.mean)
            margin = self.asha.margins[rung.index]
            if comparison.mean >= margin:
                self._decide(candidate, "rejected", rung=rung.index, comparison=comparison,
                             reason=f"worse than its parent by more than the seed noise at this rung ({margin:.4g})")

    def _promote(self, draining: bool = False) -> bool:
        """Move candidates up the ladder; whether any moved."""
        moved = False
        for variant_id, rung in self.asha.promotions(draining):
            candidate = self.candidates.get(variant_id)
            if candidate is None or (self._ended and rung < self.ladder.top.index):
                continue
            self.store.decide(variant_id, "promoted", rung=rung, reference=candidate.reference)
            self._enter_rung(candidate, rung)
            moved = True
        return moved

    def _decide(self, candidate: Candidate, kind: str, *, rung: int | None = None, comparison: Paired | None = None,
                reason: str = "", value: float | None = None, **extra) -> None:
        variant = candidate.variant
        detail = {"reason": reason, **extra}
        if comparison is not None:
            detail["paired"] = comparison.to_dict()
        self.store.decide(variant.id, kind, rung=rung, reference=candidate.reference, detail=detail)
        self.candidates.pop(variant.id, None)
        self.asha.close(variant.id)
        self.queue = [item for item in self.queue if item[2].variant != variant.id]
        heapq.heapify(self.queue)
        trial = self.trials.get(variant.id)
        if trial:
            state = {"accepted": TrialState.COMPLETE, "rejected": TrialState.COMPLETE if value is not None else
                     TrialState.PRUNED, "failed": TrialState.FAIL, "refused": TrialState.FAIL}.get(kind, TrialState.PRUNED)
            self.tuner.tell(trial[1], state, value)
        shown = f" {comparison}" if comparison else ""
        self.event(f"{variant.id[:8]} {variant.origin} {kind}{shown}{' - ' + reason if reason else ''}")

    # ---------------------------------------------------------------- population
    def _admit(self, variant: Variant) -> None:
        self.pool.trim(self.config.population)
        self.accepted_since_recheck += 1
        if self.accepted_since_recheck >= self.config.recheck_every:
            self.accepted_since_recheck = 0
            self._start_recheck()

    # ---------------------------------------------------------------- re-checks
    def _start_recheck(self) -> None:
        """Re-run the best unchecked elite and its reference on fresh seeds; retire it if the gain fades."""
        checked = {d.variant_id for d in self.store.decisions() if d.kind in ("confirmed", "retired")}
        elites = [v for v in self.pool.members() if v.id != self.baseline.id and v.id not in checked
                  and v.id not in self.rechecks]
        if not elites:
            return
        elite = elites[0]
        count = self.store.meta().get("recheck_count", 0)
        seeds = self.ladder.recheck_seeds(count * self.config.recheck_seeds, self.config.recheck_seeds)
        self.store.set_meta("recheck_count", count + 1)
        self.rechecks[elite.id] = (elite.parents[0], seeds)
        self.store.set_meta("rechecks_running", self.rechecks)
        self._enqueue_recheck(elite.id, elite.parents[0], seeds)

    def _enqueue_recheck(self, elite: str, reference: str, seeds: tuple[int, ...]) -> None:
        top = self.ladder.top
        requests = [Request(v, top.budget, s, purpose="recheck") for v in (elite, reference) for s in seeds]
        for request in self.evaluator.missing(requests):
            self._push(-top.index - 1, request, self.variants[request.variant].source)
        self._recheck_done(elite)

    def _recheck_done(self, variant_id: str) -> None:
        for elite, (reference, seeds) in list(self.rechecks.items()):
            if variant_id not in (elite, reference):
                continue
            pending = [*self.evaluator.in_flight(), *(item[2] for item in self.queue)]
            if any(r.variant in (elite, reference) and r.purpose == "recheck" for r in pending):
                continue
            top = self.ladder.top
            all_seeds = top.seeds + tuple(seeds)
            comparison = paired(self.evaluator.scores(elite, top.budget, all_seeds),
                                self.evaluator.scores(reference, top.budget, all_seeds))
            kind = "confirmed" if comparison is not None and comparison.better(self.config.alpha) else "retired"
            self.store.decide(elite, kind, reference=reference, detail={"paired": comparison.to_dict() if comparison
                                                                         else None, "fresh_seeds": list(seeds)})
            del self.rechecks[elite]
            self.store.set_meta("rechecks_running", self.rechecks)
            self.event(f"{elite[:8]} re-checked on fresh seeds: {kind} {comparison or ''}")

    # ---------------------------------------------------------------- children
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
        if not self.candidates and not self.evaluator.in_flight() and not self.queue:
            self._exhausted = True  # nobody left who could join the population and open new proposals
            self.event("no new child could be proposed: every member's mutations have been tried")
        return False

    def _make(self, kind: str, members: list[Member], parent: Member | None) -> children.Child:
        if kind == "merge":
            pair = select_pair(members, self.rng)
            if pair is None:
                raise children.NoChild("no two members with different changes to merge")
            fitness = {m.id: m.fitness for m in members}
            return children.merged(self.baseline_source, self.variants[pair[0].id], self.variants[pair[1].id], fitness)
        chosen = self.variants[(parent or select_parent(members, self.rng)).id]
        if kind == "tune":
            child = children.tune(self.tuner, chosen)
            if child.source == chosen.source:  # the study's first trial: the parent's own values, measured already
                self.tuner.tell(child.trial_id, TrialState.COMPLETE, self.pool.fitness(chosen))
                child = children.tune(self.tuner, chosen)
            return child
        return children.structural(self.source, chosen, children.proposal_request(
            chosen, self.variants, self.store.decisions(), self.config.direction))

    def _queue_child(self, child: children.Child) -> bool:
        self.llm_cost += child.cost_usd
        parent = self.variants[child.parents[0]]
        variant, new = self.store.add_variant(child.source, knobs=knob_values(child.source, self.config),
                                              parents=child.parents, mutation=child.mutation.to_dict(),
                                              origin=child.origin)
        if not new:
            if child.trial_id is not None:
                self.tuner.tell(child.trial_id, TrialState.PRUNED)
            self.event(f"duplicate of {variant.id[:8]} skipped ({child.origin})", quiet=True)
            return False
        self.variants[variant.id] = variant
        self.children_made += 1
        self.store.set_meta("children", self.children_made)
        self.store.set_meta("llm_cost_usd", self.llm_cost)
        if child.trial_id is not None:
            self.store.link_trial(variant.id, study_name(parent.id), child.trial_id)
            self.trials[variant.id] = (study_name(parent.id), child.trial_id)
        candidate = Candidate(variant)
        self.candidates[variant.id] = candidate
        if child.refusal:
            self._decide(candidate, "refused", reason=child.refusal)
            return True
        self.event(f"{variant.id[:8]} {child.origin} from {parent.id[:8]}: {child.mutation.description[:80]}",
                    quiet=True)
        self._resume_candidate(candidate)
        return True

    # ================================================================ reporting
    def event(self, line: str, quiet: bool = False) -> None:
        self.recent = (self.recent + [line])[-_RECENT:]
        if not quiet:
            self.reporter.event(line)

    def set_phase(self, phase: str) -> None:
        self.phase = phase
        self.store.set_meta("phase", phase)
        self._snapshot(force=True)

    def _snapshot(self, force: bool = False) -> None:
        if not hasattr(self, "evaluator"):
            return
        snapshot = build_snapshot(self)
        self.reporter.refresh(snapshot)
        now = time.time()
        if force or now - self._last_snapshot >= _SNAPSHOT_EVERY:
            self._last_snapshot = now
            self.store.set_meta("snapshot", snapshot.to_dict())
            self.store.set_meta("heartbeat", now)
            self.store.set_meta("elapsed", snapshot.elapsed)
            if self.phase == "search":
                self.store.set_meta("search_seconds", self.search_seconds)


def _versions() -> dict:
    names = ("evotrain", "torch", "optuna", "libcst", "numpy", "pandas", "anthropic")
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def _cpu_count() -> int:
    return os.cpu_count() or 1


def _last_lines(text: str, count: int = 5) -> str:
    return "\n".join(text.strip().splitlines()[-count:])


def _raise_keyboard_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


