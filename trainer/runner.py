"""The runner: one evaluation of one variant, from its source to its EvalResult.

It is the one place that sequences the pieces, each in its own module:

1. launch: a training process and a scorer, each sandboxed (trainer/sandbox.py: namespaces and
   a read-only view where the machine allows, trainer/isolation.py), taken ready from the
   caller's spares when it keeps them (trainer/spares.py);
2. train: hand the training process its run (train.py, its session, the log) and answer its
   requests with the batch server (trainer/batch_server.py), which serves and counts the data,
   until it hands over its exported model; the deadline, the memory limit and the caller's stop
   are enforced throughout (trainer/supervise.py);
3. score: send that model, the scoring plan (trainer/plan.py) and the token lengths to the
   scorer (trainer/scorer.py), which runs no variant code, and read its measurements;
4. judge: status, metrics and compute (trainer/compute.py) into one EvalResult.

Scripts that print their own score take trainer/compat.py's path instead, untrusted.
"""
from __future__ import annotations

import contextlib
import math
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import psutil

from trainer.batch_server import BatchServer
from trainer.budget import Budget, BudgetUnit
from trainer.compat import run_compat, uses_runtime
from trainer.compute import Compute, measure
from trainer.datasets import PreparedDataset, prepare
from trainer.errors import UserError
from trainer.plan import PlanError, plan_frame, plan_sizes, scoring_plan
from trainer.program import Program
from trainer.protocol import MODEL_FILE, reported_number
from trainer.result import CurvePoint, EvalResult, Status
from trainer.sandbox import Child, isolation_level, start_child
from trainer.spares import Spares
from trainer.spec import DEFAULT_PROBES, PROFILES, RunSpec
from trainer.supervise import Watch, converse, exit_status, finish, reply, run_log, tail
from trainer.trust import TrustPolicy, check_machine

_SMOKE_EVAL_TOKENS = 1024
_CURVE_FIELDS = ("progress", "step", "tokens", "seconds", "val_bpb", "train_loss")
_START_FIELDS = {"device": str, "dtype": str, "torch": str, "python": str, "vocab_size": int, "seq_len": int,
                 "threads": int}
_FLOP_DECLARATION_SLACK = 1.02  # the scorer's count of the forward FLOPs may exceed the declared one by 2%

EventHandler = Callable[[dict], bool]  # returns True to stop the run early (status pruned)


def resolve_device(device: str) -> str:
    """`auto` means CUDA when the machine has an NVIDIA driver, else CPU (without importing torch)."""
    if device != "auto":
        kind = device.split(":")[0]
        if kind not in PROFILES:
            raise UserError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N")
        return device
    return "cuda" if Path("/dev/nvidiactl").exists() else "cpu"


def build_spec(
    budget: str | Budget,
    seed: int = 0,
    device: str = "auto",
    dataset: str = "shakespeare",
    tokenizer: str | None = None,
    split: str = "val",
    threads: int = 0,
    probes: tuple[float, ...] = DEFAULT_PROBES,
    log: Callable[[str], None] | None = None,
) -> RunSpec:
    """A complete spec: the dataset prepared (cached), the device resolved, its profile applied."""
    if split not in ("val", "test"):
        raise UserError(f"split must be val or test, but got {split!r}")
    budget = Budget.parse(budget) if isinstance(budget, str) else budget
    prepared = prepare(dataset, tokenizer=tokenizer, log=log)
    return RunSpec.for_device(resolve_device(device), budget=budget, seed=seed, dataset_root=str(prepared.root),
                              split=split, threads=threads, probes=tuple(probes))


def smoke_spec(budget: str = "1tok", device: str = "cpu") -> RunSpec:
    """A spec for a quick check that a variant trains: one thread, a small validation set.
    The default budget, one token, is spent by the first step."""
    return for_smoke(build_spec(budget, seed=0, device=device, threads=1))


def for_smoke(spec: RunSpec) -> RunSpec:
    """The same run validated on a small slice, at least one row of the device's context (2048 on
    CUDA: a fixed 1024 tokens made every smoke run there invalid)."""
    eval_tokens = max(_SMOKE_EVAL_TOKENS, spec.profile.seq_len)
    return replace(spec, profile=replace(spec.profile, eval_tokens=eval_tokens, probe_rows=2))


def default_timeout(budget: Budget) -> float:
    """Deadline for a run: the budget plus start-up, compilation and evaluation, generously."""
    if budget.unit is BudgetUnit.SECONDS:
        return 1.5 * budget.amount + 180
    if budget.unit is BudgetUnit.FLOPS:
        return 300 + budget.amount / 1e9  # the CPU baseline trains at ~6e10 FLOP/s on 2 cores: room for slow ones
    return 300 + budget.amount / 2000  # the slowest CPU baseline measured trains ~4k tokens/s under load


def default_memory_mb() -> int:
    return int(psutil.virtual_memory().total * 0.8 / 2**20)


def run_variant(
    source: str,
    spec: RunSpec,
    *,
    timeout_s: float,
    memory_mb: int | None = None,
    log_path: Path | None = None,
    on_event: EventHandler | None = None,
    stop: threading.Event | None = None,
    spares: Spares | None = None,
    compat: bool | None = None,
    require_isolation: bool = False,
) -> EvalResult:
    """Evaluate one train.py source (or a program's text: the script and its modules, trainer.program):
    trained in a sandbox on batches the runner serves, scored by the trusted scorer on its exported model.

    A script that does not use the runtime (trainer.compat.uses_runtime; or `compat=True`) runs
    in compatibility mode: as it is, with its program's other files (its prepare.py, say) beside it, scored
    by its printed val_bpb and marked untrusted. Setting `stop` (from another thread) kills the
    run; its status is then pruned. With `spares`, the run takes waiting interpreters and leaves
    fresh ones for the next run. `require_isolation` refuses to run without namespaces.
    """
    check_machine(TrustPolicy(require_isolation=require_isolation))
    level = isolation_level()
    watch = Watch.starting_now(timeout_s, memory_mb or default_memory_mb(), stop)
    if (not uses_runtime(source)) if compat is None else compat:
        return run_compat(source, spec, watch, log_path=log_path, isolation=level)
    started = time.perf_counter()
    dataset = PreparedDataset.load(spec.dataset_root)
    try:
        _, _, call_rows = plan_sizes(len(dataset.tokens(spec.split)), spec.profile.seq_len, spec.profile.eval_tokens,
                                     spec.profile.check_rows, spec.profile.eval_batch_rows)
    except PlanError as error:
        return _invalid(spec, str(error), level)
    with run_log(log_path) as log_fd, contextlib.ExitStack() as stack:
        if spares:  # a run that reported nothing started none
            stack.callback(spares.replenish, spec.device, spec.threads)
        trainer = stack.enter_context(_launched(spares, "train", spec))
        scorer = stack.enter_context(_launched(spares, "score", spec))
        handler = _replenishing(spares, spec, on_event) if spares else on_event
        training = _train(trainer, source, spec, dataset, call_rows, log_fd, watch, handler)
        trainer.discard()  # its cores and memory go to the scorer
        score = _score(scorer, training, spec, dataset, log_fd, watch) if training.model else {}
        log_tail = tail(log_fd) or training.start_log
    return _judge(spec, training, score, watch, time.perf_counter() - started, log_tail, level)


# ---------------------------------------------------------------- 1. launch
@contextlib.contextmanager
def _launched(spares: Spares | None, role: str, spec: RunSpec) -> Iterator[Child]:
    """A sandboxed interpreter of `role` for this run (a waiting spare if there is one), discarded after."""
    child = (spares.take(spec.device, spec.threads, role=role) if spares else None) or \
        start_child(role, spec.device, spec.threads)
    try:
        yield child
    finally:  # also when the runner itself is interrupted (Ctrl-C, a cancelled Ray task)
        child.discard()


def _replenishing(spares: Spares, spec: RunSpec, on_event: EventHandler | None) -> EventHandler:
    """`on_event` that first starts the next run's spares, at this run's first report after "start"
    (its first step): start-up and the first step, which count as overhead, run alone."""
    asked = threading.Event()

    def handle(event: dict) -> bool:
        if event.get("event") != "start" and not asked.is_set():
            asked.set()
            spares.replenish(spec.device, spec.threads)
        return on_event is not None and bool(on_event(event))

    return handle


# ---------------------------------------------------------------- 2. train
@dataclass
class _Training:
    server: BatchServer
    start: dict = field(default_factory=dict)       # what the runtime said about itself
    model: tuple[dict, int | None] | None = None    # the exported model: description, descriptor of its tensors
    failure: tuple[Status, str] | None = None       # the variant's own report of how it ended
    startup_seconds: float = 0.0                    # from the handover of the run to its first batch
    cpu_at_first_batch: float | None = None
    export_seconds: float = 0.0                     # from the last step to the model's arrival
    cpu_seconds: float = 0.0                        # of the whole tree, from its first batch to its model
    peak_memory_mb: float = 0.0
    returncode: int | None = None
    oom_killed: bool = False
    start_log: str = ""
    curve: list[CurvePoint] = field(default_factory=list)  # the probes, as the runner counted them


def _train(child: Child, source: str, spec: RunSpec, dataset: PreparedDataset, call_rows: int, log_fd: int,
           watch: Watch, on_event: EventHandler | None) -> _Training:
    curve: list[CurvePoint] = []

    def emit(event: dict) -> None:
        if event["event"] == "probe":
            curve.append(CurvePoint(**{k: event[k] for k in _CURVE_FIELDS}))
        if on_event is not None and on_event(event):
            watch.pruned.set()

    training = _Training(BatchServer(spec, dataset.tokens("train"), emit), curve=curve)
    server = training.server
    for name, text in Program.parse(source).runnable().items():
        child.put(name, text)
    child.wait_ready(watch.remaining())  # its whole tree exists now: it all goes into the cgroup
    child.confine(watch.memory_mb)
    config = spec.session_config(dataset.vocab_size, dataset.token_bytes().tolist())
    handed = time.perf_counter()
    reply(child, watch, {"type": "job", "session": {**config, "export_rows": call_rows}}, fds=[log_fd])

    def handle(header: dict, payload: bytes) -> bool:
        kind = header.get("type")
        if kind == "ready":
            return False
        if kind == "start":
            training.start = _said_about_itself(header)
            emit({"event": "start", **training.start})
            return False
        if kind == "model":
            training.model = (header.get("graph"), child.take_file(MODEL_FILE))
            parameters = reported_number(header.get("parameters"))  # as the runtime counted them: informative only
            training.start["parameters"] = int(parameters) if parameters is not None else None
            training.export_seconds = server.since_last_step()
            training.cpu_seconds = child.cpu_seconds() - (training.cpu_at_first_batch or 0.0)
            training.peak_memory_mb = reported_number(header.get("peak_memory_mb")) or 0.0
            late = server.finish_gap()
            if late:
                server.failure = (Status.OVER_BUDGET, late)
            return True
        if kind == "error":
            training.failure = (_status(header.get("status")), str(header.get("message", ""))[:300])
            return True
        if kind == "batch" and server.first_batch_at is None:
            training.startup_seconds = time.perf_counter() - handed
            training.cpu_at_first_batch = child.cpu_seconds()  # imports and set-up are not training
        answer, data = server.handle(header)
        if not reply(child, watch, answer, data):
            watch.end(Status.INVALID, "the training process stopped reading the runner's answers")
        return server.failure is not None or watch.killed_for is not None

    converse(child, watch, handle, max_payload=0)
    if training.model is None and training.cpu_at_first_batch is not None:
        training.cpu_seconds = child.cpu_seconds() - training.cpu_at_first_batch
    said_how_it_ended = training.model is not None or training.failure is not None or server.failure is not None
    training.returncode = finish(child, watch, patience_s=0) if said_how_it_ended else finish(child, watch)
    training.oom_killed = child.group is not None and child.group.oom_killed()
    if child.group is not None:
        training.peak_memory_mb = training.peak_memory_mb or child.group.peak_memory_mb()
    training.start_log = tail(child.start_log)
    return training


# ---------------------------------------------------------------- 3. score
def _score(child: Child, training: _Training, spec: RunSpec, dataset: PreparedDataset, log_fd: int,
           watch: Watch) -> dict:
    description, weights = training.model
    if weights is None:
        return {"status": Status.INVALID.value, "message": f"finish() left no readable {MODEL_FILE} with the model"}
    try:
        return _scored(child, description, weights, spec, dataset, log_fd, watch)
    finally:
        os.close(weights)  # the scorer received its own copy


def _scored(child: Child, description: dict, weights: int, spec: RunSpec, dataset: PreparedDataset, log_fd: int,
            watch: Watch) -> dict:
    profile = spec.profile
    plan = scoring_plan(dataset.tokens(spec.split), profile.seq_len, profile.eval_tokens, profile.check_rows,
                        profile.eval_batch_rows, np.random.default_rng(secrets.randbits(128)))  # secret cuts
    child.wait_ready(watch.remaining())
    child.confine(watch.memory_mb)
    job = {"type": "job", "graph": description, "threads": spec.threads, "dtype": profile.dtype,
           "vocab_size": dataset.vocab_size, "token_bytes": dataset.token_bytes().tolist(),
           "tolerance": profile.check_tolerance, "count_flops": spec.budget.unit is BudgetUnit.FLOPS}
    answer: dict = {}
    handed = time.perf_counter()
    for header, payload, fds in ((job, b"", [log_fd, weights]), (*plan_frame(plan), [])):
        if not reply(child, watch, header, payload, fds):
            return {"scorer_log": f"exit code {finish(child, watch)}; {tail(child.start_log)}"}  # died before its job

    def handle(header: dict, payload: bytes) -> bool:
        if header.get("type") == "score":
            answer.update(header)
            return True
        return False

    converse(child, watch, handle, max_payload=0)
    if not answer and watch.killed_for is None:  # how it ended is the only clue left
        answer["scorer_log"] = f"exit code {finish(child, watch)}; {tail(child.start_log)}"
    return {**answer, "scored_rows": plan.scored_rows, "check_rows": plan.check_rows,
            "scoring_seconds": time.perf_counter() - handed}


# ---------------------------------------------------------------- 4. judge
def _judge(spec: RunSpec, training: _Training, score: dict, watch: Watch, wall: float, log_tail: str,
           level: str) -> EvalResult:
    server = training.server
    compute = None
    flops_per_token = score.get("flops_per_token", server.declared_flops)  # the scorer's count for FLOP budgets
    if score.get("status") == Status.OK.value:
        spent = training.cpu_seconds if spec.device == "cpu" else server.training_seconds
        compute = measure(spent, server.tokens, score["forward_seconds_per_token"], flops_per_token or 0.0)
    status, message = _verdict(spec, training, score, watch, compute)
    metrics = {"steps": server.steps, "tokens": server.tokens, "training_seconds": server.training_seconds,
               "tokens_per_second": server.timed_tokens / server.training_seconds if server.training_seconds else 0.0,
               "peak_memory_mb": training.peak_memory_mb or watch.peak_rss_mb}
    if status is Status.OK:
        metrics["val_bpb"] = score["nats"] / (math.log(2) * score["bytes"])
    extra = {k: v for k, v in training.start.items() if k != "device"}
    extra.update(startup_seconds=training.startup_seconds, export_seconds=training.export_seconds,
                 peak_rss_mb=round(watch.peak_rss_mb, 1))
    extra.update({k: score[k] for k in ("scoring_seconds", "eval_seconds", "deviation", "compared", "scored_rows",
                                        "check_rows", "forward_seconds_per_token") if k in score})
    extra.update(flops_per_token=flops_per_token, flops_counted_by="scorer" if "flops_per_token" in score else "runtime")
    if compute is not None:
        extra["compute_ratio"] = round(compute.ratio, 3)
    return EvalResult(status=status, message=message, curve=tuple(training.curve), wall_seconds=wall,
                      device=training.start.get("device", spec.device), budget=str(spec.budget),
                      budget_unit=spec.budget.unit.value, seed=spec.seed, split=spec.split, log_tail=log_tail,
                      extra=extra, isolation=level, cpu_seconds=training.cpu_seconds,
                      flops=compute.flops if compute else 0.0, **metrics)


def _verdict(spec: RunSpec, training: _Training, score: dict, watch: Watch,
             compute: Compute | None) -> tuple[Status, str]:
    """The first reason the run fails, in order of precedence, or ok."""
    server = training.server
    if watch.killed_for is not None:
        return watch.killed_for, watch.message
    if server.failure is not None:
        return server.failure
    if training.failure is not None:
        return training.failure
    if training.model is None:
        return exit_status(training.returncode, training.oom_killed, training.start_log)
    if not score.get("status"):
        return Status.CRASH, f"the scorer ended without an answer: {score.get('scorer_log', '')[-300:]}"
    if score["status"] != Status.OK.value:
        return Status(score["status"]), score.get("message", "")
    declared = server.declared_flops
    if spec.budget.unit is BudgetUnit.FLOPS and score["flops_per_token"] > (declared or 0) * _FLOP_DECLARATION_SLACK:
        return Status.OVER_BUDGET, (f"the model costs {score['flops_per_token']:.4g} forward FLOPs per token, more "
                                    f"than the {declared or 0:.4g} its first step declared: the FLOP budget was "
                                    "metered too low")
    excess = compute.excess(spec.profile.compute_limit, server.batches) if compute else None
    if excess:
        return Status.OVER_BUDGET, excess
    return Status.OK, ""


def _invalid(spec: RunSpec, message: str, level: str) -> EvalResult:
    return EvalResult(status=Status.INVALID, message=message, device=spec.device, budget=str(spec.budget),
                      budget_unit=spec.budget.unit.value, seed=spec.seed, split=spec.split, isolation=level)


def _said_about_itself(header: dict) -> dict:
    """The runtime's start report, as far as it is what it should be (it goes into every result)."""
    return {key: value[:100] if isinstance(value, str) else value for key, kind in _START_FIELDS.items()
            if isinstance(value := header.get(key), kind)}


def _status(value: object) -> Status:
    try:
        return Status(value)
    except ValueError:
        return Status.CRASH

