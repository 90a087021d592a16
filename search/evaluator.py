"""Evaluations as the driver sees them: claim in the store, run on an executor, commit the result.

The evaluator is the only writer of evaluations. Each one is claimed (a `running` row)
before it is submitted and committed the moment it finishes, so a search killed at any
point loses nothing finished; what was running is re-queued when the search resumes.
Smoke runs (one optimizer step, to catch a broken child before it spends real budget) are
stored like the others, under their own budget (`1tok`), so a child refused there keeps its
status and log. Every result passes the trust policy before it is stored (trainer.trust.admit):
a score a script printed itself, or one not isolated when isolation is required, is stored as
`invalid` with the reason, unless the user asked for compatibility mode.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from population.store import Store
from search.executors import EvalJob, Executor
from trainer.budget import Budget
from trainer.result import EvalResult
from trainer.runner import default_timeout, for_smoke
from trainer.spec import RunSpec
from trainer.trust import TrustPolicy, admit, check_machine

_PRUNE_FROM_PROGRESS = 0.5   # probes before half the budget are too noisy to stop a run on
_PROGRESS_TOLERANCE = 0.05


@dataclass(frozen=True)
class Request:
    variant: str
    budget: Budget
    seed: int
    split: str = "val"
    purpose: str = ""        # shown in progress and costed apart: "search", "confirm", "rung 1", "smoke", "test", ...
    prune_against: str | None = None  # stop it early when its probes fall behind this variant's (same budget, seed)

    @property
    def key(self) -> tuple[str, str, int, str]:
        return self.variant, str(self.budget), self.seed, self.split


@dataclass(frozen=True)
class PruneRule:
    """Stop a run whose probe is clearly worse than its reference's at the same point of the same
    seed and budget. Picklable, so it also runs inside a Ray task."""

    reference: tuple[tuple[float, float], ...]   # (progress, val_bpb) of the reference run's probes
    margin: float                                 # relative: 0.03 stops a run 3% worse than its reference

    def __call__(self, event: dict) -> bool:
        if event.get("event") != "probe" or event.get("progress", 0.0) < _PRUNE_FROM_PROGRESS:
            return False
        near = [bpb for progress, bpb in self.reference if abs(progress - event["progress"]) <= _PROGRESS_TOLERANCE]
        return bool(near) and event["val_bpb"] > near[0] * (1 + self.margin)


def prune_rule(reference: EvalResult | None, margin: float) -> PruneRule | None:
    if reference is None or not reference.curve or margin <= 0:
        return None
    return PruneRule(tuple((p.progress, p.val_bpb) for p in reference.curve), margin)


class Evaluator:
    def __init__(self, store: Store, executor: Executor, template: RunSpec, run_dir: Path,
                 on_finish: Callable[[Request, EvalResult], None] | None = None, timeout_s: float | None = None,
                 prune_margin: float = 0.0, trust: TrustPolicy = TrustPolicy()) -> None:
        check_machine(trust)
        self.store, self.executor, self.template = store, executor, template
        self._trust = trust
        self._logs = Path(run_dir) / "logs"
        self._on_finish = on_finish
        self._timeout_s = timeout_s   # None: from the budget (trainer.runner.default_timeout)
        self._prune_margin = prune_margin
        self._results: dict[tuple, EvalResult] = {}
        self._requests: dict[tuple, Request] = {}    # what each finished evaluation was asked as
        self._claims: dict[int, Request] = {}       # evaluation id -> request
        self.requeued = store.requeue_interrupted()
        for evaluation in store.evaluations():
            if evaluation.result is not None:
                request = Request(evaluation.variant_id, Budget.parse(evaluation.budget), evaluation.seed,
                                  evaluation.split, evaluation.purpose)
                self._results[request.key] = evaluation.result
                self._requests[request.key] = request

    # ---------------------------------------------------------------- reading
    def result(self, request: Request) -> EvalResult | None:
        return self._results.get(request.key)

    def scores(self, variant: str, budget: Budget, seeds: Iterable[int] | None = None,
               split: str = "val") -> dict[int, float]:
        """seed -> val_bpb of the finished, successful evaluations (among these seeds, when given)."""
        if seeds is None:
            seeds = sorted(s for v, b, s, p in self._results if (v, b, p) == (variant, str(budget), split))
        found = {}
        for seed in seeds:
            result = self._results.get((variant, str(budget), seed, split))
            if result is not None and result.status.is_ok():
                found[seed] = result.val_bpb
        return found

    def items(self) -> list[tuple[Request, EvalResult]]:
        """Every finished evaluation as (request, result), in the order they finished."""
        return [(self._requests[key], result) for key, result in self._results.items()]

    def missing(self, requests: Iterable[Request]) -> list[Request]:
        """The requests with neither a result nor a run in flight."""
        running = {request.key for request in self._claims.values()}
        return [r for r in requests if r.key not in self._results and r.key not in running]

    def finished(self) -> list[EvalResult]:
        """Every finished evaluation's result, held in memory: the dashboard reads these, not the store."""
        return list(self._results.values())

    def in_flight(self) -> list[Request]:
        return list(self._claims.values())

    def request_for(self, job_key: int) -> Request | None:
        return self._claims.get(job_key)

    # ---------------------------------------------------------------- running
    def submit(self, request: Request, source: str) -> bool:
        """Claim and start one evaluation; False when it is done or claimed already."""
        key = self.store.begin_evaluation(request.variant, str(request.budget), request.seed, request.split,
                                          request.purpose)
        if key is None:
            return False
        spec = replace(self.template, budget=request.budget, seed=request.seed, split=request.split)
        if request.purpose == "smoke":
            spec = replace(for_smoke(spec), probes=())
        log = self._logs / request.variant / f"{request.split}-{request.budget}-s{request.seed}.log"
        self._claims[key] = request
        prune = None
        if request.prune_against is not None:
            prune = prune_rule(self.result(replace(request, variant=request.prune_against)), self._prune_margin)
        self.executor.submit(EvalJob(key=key, source=source, spec=spec,
                                     timeout_s=self._timeout_s or default_timeout(request.budget),
                                     log_path=log, on_event=prune, label=f"{request.variant[:8]} {request.purpose}"))
        return True

    def poll(self, timeout: float) -> list[tuple[Request, EvalResult]]:
        """Wait up to `timeout` seconds for finished evaluations; each is committed before it is returned."""
        finished = []
        for job, result in self.executor.wait(timeout):
            result = admit(result, self._trust)
            request = self._claims.pop(job.key)
            self.store.finish_evaluation(job.key, result, log_path=str(job.log_path))
            self._results[request.key] = result
            self._requests[request.key] = request
            finished.append((request, result))
            if self._on_finish is not None:
                self._on_finish(request, result)
        return finished

    def run_all(self, work: list[tuple[Request, str]]) -> None:
        """Run every missing request (request, source) to completion, as many at once as there are slots."""
        queue = [(r, s) for r, s in work if r.key not in self._results]
        while queue or self._claims:
            while queue and self.executor.free_slots() > 0:
                self.submit(*queue.pop(0))
            self.poll(timeout=1.0)

    def stop(self) -> None:
        """Kill what runs and forget its claims, so a resumed search runs it again."""
        self.executor.stop()
        self._claims.clear()
        self.store.requeue_interrupted()

