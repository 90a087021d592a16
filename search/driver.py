"""The driver of a search: it claims, runs, commits and resumes evaluations, and asks and tells the strategy.

Phases, each recorded in the store as it starts: `search` (the strategy's; it may name its own
stages, such as combine or confirm), `test` (the strategy's answer against the baseline on the
held-out split with fresh seeds) and `done`. The driver is the only writer of the store; the
strategy decides what runs and what it means (search/strategies/_base.py). Kill it at any
moment and run it again: finished evaluations are kept, running ones are forgotten (the
strategy asks again for what it still needs).
"""
from __future__ import annotations

import hashlib
import os
import platform
import signal
import time
from dataclasses import replace
from importlib import metadata
from pathlib import Path

from mutations.sources import MutationSource, make_source
from population.ladder import Ladder
from population.store import DecisionKind, Store, Variant
from search import finish
from search.config import EvolveConfig, check_resume
from search.context import Limits, Search, knob_values
from search.dashboard import build_snapshot, running_slots
from search.evaluator import Evaluator, Request
from search.executors import Executor, LocalExecutor, RayExecutor, local_slots
from search.lock import RunLock
from search.progress import Reporter
from search.strategies import STRATEGIES
from search.strategies._base import Outcome, Signal, Steps, Strategy
from trainer.budget import BudgetUnit
from trainer.errors import UserError
from trainer.program import Program
from trainer.result import EvalResult
from trainer.runner import build_spec
from trainer.trust import TrustPolicy

_SNAPSHOT_EVERY = 5.0
_RECENT = 8


class Stopped(Exception):
    """Ctrl-C or SIGTERM: running evaluations were killed and will run again on resume."""


def load_baseline(config: EvolveConfig) -> str:
    """The baseline's text: the script, or with the local modules it imports, a program's (trainer.program)."""
    from trainer.baselines import BASELINE

    path = config.baseline or BASELINE
    if not Path(path).is_file():
        raise UserError(f"no such baseline: {path}; pass the path of a train.py, or nothing for the built-in one")
    return Program.load(Path(path)).text


def baseline_identity(program: Program | None) -> str:
    """What a resume must find unchanged: a hash of the script and its local modules (None: "built-in")."""
    if program is None:
        return "built-in"
    return hashlib.sha256(program.text.encode()).hexdigest()[:16]


def make_executor(config: EvolveConfig) -> Executor:
    if config.executor == "ray":
        gpus = 1 if config.device_kind == "cuda" else 0
        return RayExecutor(address=config.ray_address, gpus_per_task=gpus, slots=config.workers)
    return LocalExecutor(local_slots(config.device, config.workers))


def trust_policy(config: EvolveConfig) -> TrustPolicy:
    return TrustPolicy(allow_untrusted=config.compat, require_isolation=config.require_isolation)


def make_ladder(config: EvolveConfig) -> Ladder:
    """The rungs the options give, or the strategy's own."""
    fractions, seeds = STRATEGIES[config.strategy].default_ladder
    return Ladder.build(config.top_budget, config.fractions or fractions, config.seeds or seeds, config.eta,
                        config.seed)


class Driver:
    def __init__(self, config: EvolveConfig, reporter: Reporter, source: MutationSource | None = None,
                 executor: Executor | None = None) -> None:
        self.config, self.reporter = config, reporter
        # Objects instead of config.mutator / config.executor (tests, benchmarks, the Python API).
        self._given_source, self._given_executor = source, executor

    def run(self) -> dict:
        """The whole search; returns the final result (also stored as meta "result")."""
        with RunLock(self.config.run_dir):
            self._open()
            previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
            try:
                return self._phases()
            except KeyboardInterrupt:
                self.evaluator.stop()
                self._snapshot(force=True, stopped=True)
                raise Stopped() from None
            finally:
                signal.signal(signal.SIGTERM, previous)
                self.executor.close()
                self.store.close()

    # ---------------------------------------------------------------- setup
    def _open(self) -> None:
        config = self.config
        self.store = Store(config.storage_url())
        meta = self.store.meta()
        if "options" in meta:
            check_resume(EvolveConfig.from_dict(meta["options"]), config)
            self.reporter.event(f"resuming {config.run_dir} (phase {meta.get('phase', 'search')})")
        self.store.set_meta("options", config.to_dict())
        self.store.set_meta("versions", _versions())
        self.store.set_meta("hardware", {"machine": platform.machine(), "processor": platform.processor(),
                                         "python": platform.python_version(), "cpus": os.cpu_count() or 1,
                                         "device": config.device_kind})
        self.phase = meta.get("phase", "search")
        self.started = time.time() - meta.get("elapsed", 0.0)
        self.search_seconds = meta.get("search_seconds", 0.0)
        self.base_source = load_baseline(config)
        self.baseline, _ = self.store.add_variant(self.base_source, knobs=knob_values(self.base_source,
                                                                                     config.device_kind),
                                                  origin="baseline")
        self.store.set_meta("baseline", {"id": self.baseline.id, "path": str(config.baseline or "built-in"),
                                         "hash": config.baseline_hash})
        self.ladder = make_ladder(config)
        self.store.set_meta("ladder", self.ladder.to_dict())
        template = build_spec(config.top_budget, device=config.device, dataset=config.dataset,
                              log=self.reporter.event)
        if config.eval_tokens:
            template = replace(template, profile=replace(template.profile, eval_tokens=config.eval_tokens))
        self.executor = self._given_executor or make_executor(config)
        self.evaluator = Evaluator(self.store, self.executor, template, config.run_dir, on_finish=self._finished,
                                   timeout_s=config.timeout, prune_margin=config.prune_margin,
                                   trust=trust_policy(config))
        if any(result.status.is_ok() and not result.isolation for _, result in self.evaluator.items()):
            raise UserError(f"{config.run_dir} was measured before the trust boundary (its scores mean something "
                            "else now): start a new run with --name")
        if self.evaluator.requeued:
            self.reporter.event(f"re-queued {self.evaluator.requeued} evaluations a stopped search left running")
        self.variants: dict[str, Variant] = {v.id: v for v in self.store.variants()}
        self.limits = Limits(**meta.get("limits", {}), children=meta.get("children", 0))
        source = self._given_source or make_source(
            config.mutator, seed=config.seed, max_cost_usd=config.max_llm_cost,
            record_path=Path(config.run_dir) / "llm.jsonl", device=config.device_kind)
        self.search = Search(config, self.store, self.evaluator, source, self.baseline, self.ladder, self.variants,
                             self.limits, self._event, self._set_phase, len(self.executor.slots))
        self.recent: list[str] = []
        self._last_snapshot = 0.0
        self._incumbent = next((d.variant_id for d in reversed(self.store.decisions())
                                if d.kind == DecisionKind.INCUMBENT), None)
        self.strategy: Strategy | None = None

    # ---------------------------------------------------------------- phases
    def _phases(self) -> dict:
        if self.phase == "done":
            self.reporter.event(f"{self.config.run_dir} is finished: see `search status {self.config.run_dir}`")
            return self.store.meta()["result"]
        stored = self.store.meta().get("outcome")
        if stored is None:
            self._set_phase(self.phase)
            self.strategy = STRATEGIES[self.config.strategy](self.search)
            self._drive(self.strategy)
            outcome = self.strategy.outcome()
            self.store.set_meta("search_seconds", self.search_seconds)
            self.store.set_meta("outcome", outcome.to_dict())
        else:
            outcome = Outcome.from_dict(stored)
        self._set_phase("test")
        test = Steps(self.search, finish.held_out(self.search, outcome.stack))
        self._drive(test)
        result = finish.result(self.search, outcome, test.value, self.base_source)
        self.store.set_meta("result", result)
        self._event(finish.headline(result))
        self._set_phase("done")
        return result

    def _drive(self, asker: Strategy | Steps) -> None:
        """Ask for work while slots are free, run it, tell each result back, until the asker is done."""
        tick = time.time()
        while True:
            now = time.time()
            if self.phase == "search":  # --time counts the search itself (not a noise phase or a combine step)
                self.search_seconds += now - tick
            tick = now
            self._check_limits()
            signal_ = self._fill(asker)
            if signal_ is Signal.DONE and not self.evaluator.in_flight():
                return
            if signal_ is Signal.WAIT and not self.evaluator.in_flight():
                raise RuntimeError(f"{type(asker).__name__} waits for results but nothing is running")
            for request, result in self.evaluator.poll(timeout=1.0):
                asker.tell(request, result)
                self._record_incumbent()
            self._snapshot()

    def _fill(self, asker: Strategy | Steps) -> Signal:
        while self.executor.free_slots() > 0:
            asked = asker.ask()
            if isinstance(asked, Signal):
                return asked
            done = self.evaluator.result(asked)
            if done is not None:  # finished before a resume: told back at once
                asker.tell(asked, done)
                continue
            if any(r.key == asked.key for r in self.evaluator.in_flight()):
                raise RuntimeError(f"{type(asker).__name__} asked for {asked.key}, which is running already")
            self.evaluator.submit(asked, self.variants[asked.variant].source)
        return Signal.WAIT

    def _check_limits(self) -> None:
        """Stop new search work once --time, --compute or --generations is reached (what runs, finishes)."""
        config, limits = self.config, self.limits
        before = (limits.out_of_time, limits.enough_children)
        if not limits.out_of_time:
            if config.time_limit is not None and self.search_seconds >= config.time_limit:
                limits.out_of_time = True
                self._event(f"search time is up (--time {config.time_limit:g}s): finishing up")
            elif config.compute_limit is not None and self.compute_committed() >= config.compute_limit.amount:
                limits.out_of_time = True
                self._event(f"search compute is spent (--compute {config.compute}): finishing up")
        if not limits.enough_children and config.generations is not None and \
                limits.children >= config.generations * config.population:
            limits.enough_children = True
            self._event(f"{limits.children} candidates made (--generations {config.generations}): no more")
        limits.runs_left = self._runs_left()
        if (limits.out_of_time, limits.enough_children) != before:
            self.store.set_meta("limits", {"out_of_time": limits.out_of_time,
                                           "enough_children": limits.enough_children})

    def _runs_left(self) -> float | None:
        """Full-budget runs the tightest limit still allows: compute left over one run's cost, time left over the
        search's pace so far, or the candidates --generations still allows."""
        config, estimates = self.config, []
        if config.compute_limit is not None:
            run = self._run_cost(config.compute_limit.unit)
            if run:
                self.limits.compute_runs = config.compute_limit.amount / run
                estimates.append((config.compute_limit.amount - self.compute_committed()) / run)
        walls = [r.wall_seconds for q, r in self.evaluator.items()
                 if q.split == "val" and q.budget == config.top_budget]
        if config.time_limit is not None and walls:
            pace = sum(walls) / len(walls) / len(self.executor.slots)  # seconds per run with every slot busy
            estimates.append((config.time_limit - self.search_seconds) / pace)
        if config.generations is not None:
            estimates.append(config.generations * config.population - self.limits.children)
        return max(0.0, min(estimates)) if estimates else None

    def compute_committed(self) -> float:
        """Compute of every non-test evaluation, finished or running, in --compute's unit (tokens, seconds or FLOPs;
        a running evaluation counts what a full-budget run has cost so far on average)."""
        unit = self.config.compute_limit.unit if self.config.compute_limit else BudgetUnit.TOKENS
        done = sum(result.spent(unit) for request, result in self.evaluator.items() if request.split != "test")
        running = [r for r in self.evaluator.in_flight() if r.split != "test"]
        return done + sum(r.budget.amount if r.budget.unit is unit else self._run_cost(unit) or 0.0 for r in running)

    def _run_cost(self, unit: BudgetUnit) -> float | None:
        """What one full-budget run costs in this unit: its budget when the units agree, else the mean so far."""
        top = self.config.top_budget
        if top.unit is unit:
            return top.amount
        spent = [r.spent(unit) for q, r in self.evaluator.items() if q.split == "val" and q.budget == top]
        return sum(spent) / len(spent) if spent else None

    def _record_incumbent(self) -> None:
        """Each time the strategy's answer changes, with the compute spent so far: the anytime curve."""
        if self.strategy is None or self.phase != "search":
            return
        current = self.strategy.incumbent()
        if current != self._incumbent:
            self._incumbent = current
            self.search.decide(current, DecisionKind.INCUMBENT, compute=self.compute_committed(),
                               unit=(self.config.compute_limit.unit if self.config.compute_limit else
                                     BudgetUnit.TOKENS).value)

    # ---------------------------------------------------------------- reporting
    def _finished(self, request: Request, result: EvalResult) -> None:
        shown = f"{result.val_bpb:.4f}" if result.val_bpb is not None else f"{result.status.value} {result.message}"
        self._event(f"{request.variant[:8]} {self.variants[request.variant].origin} {request.purpose} "
                    f"{request.budget} seed {request.seed}{' (test)' if request.split == 'test' else ''}: "
                    f"{shown[:120]}")

    def _event(self, line: str, quiet: bool = False) -> None:
        self.recent = (self.recent + [line])[-_RECENT:]
        if not quiet:
            self.reporter.event(line)

    def _set_phase(self, phase: str) -> None:
        self.phase = phase
        self.store.set_meta("phase", phase)
        self._snapshot(force=True)

    def _snapshot(self, force: bool = False, stopped: bool = False) -> None:
        view = self.strategy.view() if self.strategy is not None else None
        remaining = None
        if self.config.time_limit is not None:
            remaining = max(0.0, self.config.time_limit - self.search_seconds) if self.phase == "search" else 0.0
        meta = self.store.meta()
        snapshot = build_snapshot(
            run=str(self.config.run_dir), phase="stopped" if stopped else self.phase,
            elapsed=time.time() - self.started, remaining=remaining,
            children=self.limits.children,
            children_limit=self.config.generations * self.config.population if self.config.generations else None,
            slots=running_slots(self.executor, self.evaluator, self.variants), finished=self.evaluator.finished(),
            decisions=self.store.decisions(), view=view, llm_cost=self.search.llm_cost, recent=self.recent,
            result=meta.get("result"), strategy=self.config.strategy)
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


def _raise_keyboard_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt
