"""Where evaluations run: local slots (one per GPU, or a few CPU slots) or Ray tasks on a cluster.

An executor only runs evaluations and hands back their results; the driver stays the only
writer of the store (DESIGN.md, Scale). Every evaluation is one `run_variant` call, so each
is one sandboxed subprocess in its own process group wherever it runs.
"""
from __future__ import annotations

import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from pathlib import Path

from trainer.datasets import META, PreparedDataset, prepare
from trainer.errors import UserError
from trainer.result import EvalResult, Status
from trainer.runner import resolve_device, run_variant
from trainer.spares import Spares
from trainer.spec import RunSpec

_MAX_CPU_SLOTS = 4      # on 2 cores, 2 one-thread slots gave the most evaluations per hour
_RAY_LOG_BYTES = 8 << 20  # a run's log shipped back from a Ray worker: its last 8 MiB
_RAY_CANCEL_WAIT_S = 10  # for cancelled tasks to end; measured 0.2 s


@dataclass(frozen=True)
class Slot:
    device: str   # "cpu", "cuda:0", ...
    threads: int  # torch threads for CPU runs (0 = torch's default)


@dataclass(frozen=True)
class EvalJob:
    key: int                # the store's evaluation id; opaque to the executor
    source: str             # the train.py source
    spec: RunSpec           # built for the slots' device kind; the executor sets device and threads per slot
    timeout_s: float
    log_path: Path          # where the run's log ends up on the driver's machine
    memory_mb: int | None = None
    on_event: Callable[[dict], bool] | None = None  # picklable; True stops the run early (status pruned)
    label: str = ""         # for progress display (variant id, rung)


@dataclass(frozen=True)
class Running:
    """A snapshot of one running evaluation, for the live view."""

    job: EvalJob
    slot: Slot
    started: float   # time.time() at submission
    progress: float  # latest fraction of the budget the run reported (0 if unknown)


def local_slots(device: str = "auto", workers: int | None = None) -> list[Slot]:
    """One slot per visible GPU (at most `workers`), or `workers` CPU slots sharing the cores."""
    if workers is not None and workers < 1:
        raise UserError(f"workers must be at least 1, but got {workers}")
    device = resolve_device(device)
    if device.startswith("cuda:"):
        return [Slot(device, 0)]  # one named GPU
    if device == "cuda":
        gpus = _visible_gpus()
        if gpus == 0:
            raise UserError("device cuda requested but no GPU is visible (CUDA_VISIBLE_DEVICES, nvidia-smi -L); "
                            "use --device cpu")
        return [Slot(f"cuda:{i}", 0) for i in range(min(gpus, workers or gpus))]
    cores = os.cpu_count() or 1
    workers = workers or min(cores, _MAX_CPU_SLOTS)
    return [Slot("cpu", max(1, cores // workers)) for _ in range(workers)]


def _visible_gpus() -> int:
    """GPUs this process may use, counted without importing torch (a 4-5 s import)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip()])
    if shutil.which("nvidia-smi") is None:
        return 0
    listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False).stdout
    return sum(line.startswith("GPU ") for line in listing.splitlines())


def _slot_spec(job: EvalJob, slot: Slot) -> RunSpec:
    return replace(job.spec, device=slot.device, threads=slot.threads)


def _free_slot(slots: list[Slot], busy: Collection[int]) -> int:
    index = next((i for i in range(len(slots)) if i not in busy), None)
    if index is None:
        raise RuntimeError(f"all {len(slots)} slots are busy: wait() for a completion before submitting")
    return index


def _failed(job: EvalJob, slot: Slot, message: str) -> EvalResult:
    """A crash result for an evaluation the executor itself could not run."""
    spec = job.spec
    return EvalResult(status=Status.CRASH, message=message[:300], device=slot.device, budget=str(spec.budget),
                      budget_unit=spec.budget.unit.value, seed=spec.seed, split=spec.split)


class Executor(ABC):
    """Runs up to len(slots) evaluations at once; the driver submits, polls and collects."""

    slots: list[Slot]

    @abstractmethod
    def free_slots(self) -> int: ...

    @abstractmethod
    def submit(self, job: EvalJob) -> None:
        """Start job on a free slot; RuntimeError when none is free."""

    @abstractmethod
    def running(self) -> list[Running]: ...

    @abstractmethod
    def wait(self, timeout: float) -> list[tuple[EvalJob, EvalResult]]:
        """Completions since the last call, blocking up to timeout for the first one
        (returns at once when nothing runs)."""

    @abstractmethod
    def stop(self) -> None:
        """Kill every running evaluation now; their results are dropped, not returned."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class _Active:
    job: EvalJob
    started: float
    stop: threading.Event
    thread: threading.Thread | None = None
    progress: float = 0.0


class LocalExecutor(Executor):
    """One thread per running evaluation, each supervising one subprocess on its slot."""

    def __init__(self, slots: list[Slot]) -> None:
        if not slots:
            raise UserError("the local executor needs at least one slot")
        self.slots = list(slots)
        self._active: dict[int, _Active] = {}  # slot index -> what runs there
        self._done: queue.Queue[tuple[EvalJob, EvalResult]] = queue.Queue()
        self._lock = threading.Lock()
        self._spares = Spares()  # each slot's next interpreter starts while its current run trains

    def free_slots(self) -> int:
        with self._lock:
            return len(self.slots) - len(self._active)

    def submit(self, job: EvalJob) -> None:
        with self._lock:
            index = _free_slot(self.slots, self._active.keys())
            active = self._active[index] = _Active(job, time.time(), threading.Event())
            active.thread = threading.Thread(target=self._evaluate, args=(index, active), daemon=True,
                                             name=f"eval-{job.key}")
            active.thread.start()

    def running(self) -> list[Running]:
        with self._lock:
            return [Running(a.job, self.slots[i], a.started, a.progress) for i, a in sorted(self._active.items())]

    def wait(self, timeout: float) -> list[tuple[EvalJob, EvalResult]]:
        with self._lock:
            if not self._active and self._done.empty():
                return []
        try:
            completed = [self._done.get(timeout=timeout)]
        except queue.Empty:
            return []
        while not self._done.empty():
            completed.append(self._done.get_nowait())
        return completed

    def stop(self) -> None:
        with self._lock:
            stopping = list(self._active.values())
            for active in stopping:
                active.stop.set()
        for active in stopping:
            active.thread.join()

    def close(self) -> None:
        self.stop()
        self._spares.close()

    def _evaluate(self, index: int, active: _Active) -> None:
        job, slot = active.job, self.slots[index]

        def on_event(event: dict) -> bool:
            if "progress" in event:
                active.progress = event["progress"]
            return job.on_event is not None and bool(job.on_event(event))

        try:
            job.log_path.parent.mkdir(parents=True, exist_ok=True)
            result = run_variant(job.source, _slot_spec(job, slot), timeout_s=job.timeout_s, memory_mb=job.memory_mb,
                                 log_path=job.log_path, on_event=on_event, stop=active.stop, spares=self._spares)
        except Exception as error:  # the executor outlives any one evaluation
            result = _failed(job, slot, f"the executor could not run the evaluation: {type(error).__name__}: {error}")
        with self._lock:  # the slot is free before wait() can hand the result out
            del self._active[index]
            if not active.stop.is_set():
                self._done.put((job, result))


def _evaluate_on_worker(source: str, spec: RunSpec, dataset: str, tokenizer: str, timeout_s: float,
                        memory_mb: int | None, on_event: Callable[[dict], bool] | None) -> tuple[dict, str]:
    """A Ray task: one run_variant on whichever node Ray picked; returns the result and the log text."""
    if not (Path(spec.dataset_root) / META).exists():  # another machine: build its own copy
        spec = replace(spec, dataset_root=str(prepare(dataset, tokenizer=tokenizer).root))
    with tempfile.TemporaryDirectory(prefix="evotrain-ray-") as folder:
        log_path = Path(folder) / "log.txt"
        result = run_variant(source, spec, timeout_s=timeout_s, memory_mb=memory_mb, log_path=log_path,
                             on_event=on_event)
        log = log_path.read_bytes()[-_RAY_LOG_BYTES:].decode("utf-8", errors="replace")
    return result.to_dict(), log


class RayExecutor(Executor):
    """Evaluations as Ray Core tasks on an existing cluster (or a local Ray when address is None).

    Pruning runs inside each task (job.on_event travels with it); progress is not streamed back,
    so running() reports 0 for it.
    """

    def __init__(self, address: str | None = None, gpus_per_task: float = 0, cpus_per_task: float = 1,
                 slots: int | None = None) -> None:
        ray = _import_ray()
        self._ray = ray
        self._owns_ray = not ray.is_initialized()
        ray.init(address=address or None, ignore_reinit_error=True)
        count = slots or _ray_capacity(ray, gpus_per_task, cpus_per_task)
        self.slots = [_ray_slot(gpus_per_task, cpus_per_task)] * count
        self._task = ray.remote(_evaluate_on_worker).options(num_cpus=cpus_per_task, num_gpus=gpus_per_task)
        self._pending: dict = {}  # ObjectRef -> (slot index, Running)

    def free_slots(self) -> int:
        return len(self.slots) - len(self._pending)

    def submit(self, job: EvalJob) -> None:
        index = _free_slot(self.slots, {index for index, _ in self._pending.values()})
        slot = self.slots[index]
        dataset = PreparedDataset.load(job.spec.dataset_root)  # its name and tokenizer rebuild it on other nodes
        ref = self._task.remote(job.source, _slot_spec(job, slot), dataset.name, dataset.tokenizer, job.timeout_s,
                                job.memory_mb, job.on_event)
        self._pending[ref] = (index, Running(job, slot, time.time(), 0.0))

    def running(self) -> list[Running]:
        return [running for _, running in sorted(self._pending.values(), key=lambda entry: entry[0])]

    def wait(self, timeout: float) -> list[tuple[EvalJob, EvalResult]]:
        refs = list(self._pending)
        if not refs:
            return []
        ready, _ = self._ray.wait(refs, num_returns=1, timeout=timeout)
        if ready:
            ready, _ = self._ray.wait(refs, num_returns=len(refs), timeout=0)
        return [self._collect(ref) for ref in ready]

    def stop(self) -> None:
        refs = list(self._pending)
        self._pending.clear()
        if not refs:
            return
        # Not force=True: that SIGKILLs the worker, and what the run started in its own session outlives it
        # (Ray 2.60). A plain cancel raises KeyboardInterrupt in the task, and run_variant then kills the run's
        # process group; without the wait, a ray.shutdown() right after cut that short (2 of 2 tries).
        for ref in refs:
            self._ray.cancel(ref)
        self._ray.wait(refs, num_returns=len(refs), timeout=_RAY_CANCEL_WAIT_S)

    def close(self) -> None:
        self.stop()
        if self._owns_ray:
            self._ray.shutdown()

    def _collect(self, ref) -> tuple[EvalJob, EvalResult]:
        _, running = self._pending.pop(ref)
        job = running.job
        try:
            data, log = self._ray.get(ref)
        except self._ray.exceptions.RayError as error:  # the task died or raised: not the variant's verdict
            return job, _failed(job, running.slot, f"the Ray task failed: {type(error).__name__}: {error}")
        job.log_path.parent.mkdir(parents=True, exist_ok=True)
        job.log_path.write_text(log)
        return job, EvalResult.from_dict(data)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UserError("the ray executor needs Ray: pip install 'evotrain[ray]'") from None
    return ray


def _ray_slot(gpus_per_task: float, cpus_per_task: float) -> Slot:
    # Ray sets CUDA_VISIBLE_DEVICES to the task's GPUs, so "cuda" is always the right one.
    return Slot("cuda", 0) if gpus_per_task > 0 else Slot("cpu", max(1, int(cpus_per_task)))


def _ray_capacity(ray, gpus_per_task: float, cpus_per_task: float) -> int:
    kind, per_task = ("GPU", gpus_per_task) if gpus_per_task > 0 else ("CPU", cpus_per_task)
    if per_task <= 0:
        raise UserError(f"CPUs per task must be positive for CPU tasks, but got {cpus_per_task=}")
    total = ray.cluster_resources().get(kind, 0)
    if total < per_task:
        raise UserError(f"the Ray cluster has {total:g} {kind}s, fewer than the {per_task:g} each task needs; "
                        f"lower the per-task {kind} count or add nodes")
    return int(total // per_task)
