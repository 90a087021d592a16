"""The sandboxed runner: one variant, one subprocess in its own process group and scratch folder.

The child is `python -m trainer.launch train.py` (started ahead of time when the caller keeps
spares, trainer/spares.py); it reads its spec from stdin and reports through an inherited
pipe. The runner enforces the deadline and the memory limit, kills the whole group when
either is crossed, and turns what it saw into an EvalResult.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import psutil

from trainer.budget import Budget, BudgetUnit
from trainer.compat import printed_metrics, uses_runtime
from trainer.datasets import prepare
from trainer.errors import UserError
from trainer.result import CurvePoint, EvalResult, Status
from trainer.sandbox import group_rss_mb, kill_group, limit_address_space, start_child, start_launcher
from trainer.spares import Spares
from trainer.spec import DEFAULT_PROBES, PROFILES, RunSpec

_SMOKE_EVAL_TOKENS = 1024

EventHandler = Callable[[dict], bool]  # returns True to stop the run early (status pruned)

_POLL_SECONDS = 0.2
_EXIT_GRACE_SECONDS = 1.0  # after the result event, for the log's last lines before the group is killed
_LOG_TAIL_LINES = 40
_LOG_TAIL_CHARS = 4000
_ADDRESS_SPACE_HEADROOM_MB = 1024  # torch maps ~0.6 GB of virtual memory it never touches


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
    return 300 + budget.amount / 2000  # the slowest CPU baseline measured trains ~4k tokens/s under load


def default_memory_mb() -> int:
    return int(psutil.virtual_memory().total * 0.8 / 2**20)


@dataclass
class _Watch:
    """What the runner observed of one child while it ran."""

    events: list[dict] = field(default_factory=list)
    killed_for: Status | None = None
    kill_message: str = ""
    peak_rss_mb: float = 0.0
    final_at: float | None = None  # when the result (or error) event arrived


def run_variant(
    source: str,
    spec: RunSpec,
    *,
    timeout_s: float,
    memory_mb: int | None = None,
    log_path: Path | None = None,
    on_event: EventHandler | None = None,
    support: Mapping[str, str] | None = None,
    stop: threading.Event | None = None,
    spares: Spares | None = None,
) -> EvalResult:
    """Evaluate one train.py source under the trusted runtime.

    A script that does not import trainer.runtime runs in compatibility mode: as it is,
    with `support` files (its prepare.py, say) beside it, scored by its printed val_bpb.
    Setting `stop` (from another thread) kills the run; its status is then pruned. With
    `spares`, the run takes a waiting interpreter and leaves one for the next run.
    """
    memory_mb = memory_mb or default_memory_mb()
    compat = not uses_runtime(source)
    spares = None if compat else spares  # a compat script runs as itself, not under the launcher
    started = time.perf_counter()
    child = spares.take(spec.device, spec.threads) if spares else None
    if child is None and compat:
        child = start_child([sys.executable, "train.py"], spec.threads, keep_home=True, log_path=log_path,
                            files={**(support or {}), "train.py": source})
    elif child is None:
        child = start_launcher(spec.device, spec.threads)
    try:
        if spares:
            on_event = _replenishing(spares, spec, on_event)
        if spec.device == "cpu":
            limit_address_space(child.process.pid, memory_mb + _ADDRESS_SPACE_HEADROOM_MB)
        if not compat:
            (child.scratch / "train.py").write_text(source)
            if log_path is not None:
                log_path.write_bytes(b"")  # the child appends to it: a bad path fails here, in the caller
        try:
            child.process.stdin.write(b"" if compat else spec.for_child(
                child.write_end, str(log_path.resolve()) if log_path else "").to_json().encode())
            child.process.stdin.close()
        except BrokenPipeError:
            pass  # the child died at start-up; its log and exit code say why
        watch = _supervise(child.process, child.claim_channel(), timeout_s, memory_mb, on_event, stop)
        wall = time.perf_counter() - started
        log_tail = _tail(log_path) if log_path else ""
        log_tail = log_tail or _tail(child.log_path)  # a child that died before its spec wrote only there
        if compat:
            return _compat_result(spec, watch, child.process.returncode, wall, log_tail)
        return _result(spec, watch, child.process.returncode, wall, log_tail)
    finally:
        child.discard()
        if spares:
            spares.replenish(spec.device, spec.threads)  # a run that reported nothing started none


def _replenishing(spares: Spares, spec: RunSpec, on_event: EventHandler | None) -> EventHandler:
    """`on_event` that first starts the next run's spare, at this run's first report after "start"
    (its first step, or its end): start-up and the first step, which count as overhead, run alone."""
    asked = threading.Event()

    def handle(event: dict) -> bool:
        if event.get("event") != "start" and not asked.is_set():
            asked.set()
            spares.replenish(spec.device, spec.threads)
        return on_event is not None and bool(on_event(event))

    return handle


def _supervise(process: subprocess.Popen, read_end: int, timeout_s: float, memory_mb: int,
               on_event: EventHandler | None, stop: threading.Event | None) -> _Watch:
    watch = _Watch()
    stop_requested = threading.Event()

    def read_events() -> None:
        with os.fdopen(read_end, "r") as stream:
            for line in stream:
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    continue
                watch.events.append(event)
                if event.get("event") in ("result", "error") and watch.final_at is None:
                    watch.final_at = time.perf_counter()
                if on_event is not None and on_event(event):
                    stop_requested.set()

    reader = threading.Thread(target=read_events, daemon=True)
    reader.start()
    deadline = time.perf_counter() + timeout_s
    try:
        while process.poll() is None:
            watch.peak_rss_mb = max(watch.peak_rss_mb, rss := group_rss_mb(process))
            if rss > memory_mb:
                watch.killed_for, watch.kill_message = Status.OOM, f"resident memory reached {rss:.0f} MB, over the {memory_mb} MB limit"
            elif time.perf_counter() > deadline:
                watch.killed_for, watch.kill_message = Status.TIMEOUT, f"still running at the {timeout_s:.0f}s deadline; killed"
            elif stop_requested.is_set():
                watch.killed_for, watch.kill_message = Status.PRUNED, "stopped early by the scheduler"
            elif stop is not None and stop.is_set():
                watch.killed_for, watch.kill_message = Status.PRUNED, "stopped by the search"
            if watch.killed_for is not None:
                break
            if watch.final_at is not None and time.perf_counter() - watch.final_at > _EXIT_GRACE_SECONDS:
                break  # the score is in: what the script does after finish() is not worth waiting for
            try:
                process.wait(_POLL_SECONDS)
            except subprocess.TimeoutExpired:
                pass
    finally:  # also when the runner itself is interrupted (Ctrl-C, a cancelled Ray task)
        kill_group(process)  # nothing the variant started outlives it
        process.wait()
    reader.join(timeout=5)
    return watch


def _result(spec: RunSpec, watch: _Watch, returncode: int, wall: float, log_tail: str) -> EvalResult:
    start = next((e for e in watch.events if e["event"] == "start"), {})
    final = next((e for e in watch.events if e["event"] in ("result", "error")), None)
    curve = tuple(CurvePoint(**{k: e[k] for k in ("progress", "step", "tokens", "seconds", "val_bpb", "train_loss")})
                  for e in watch.events if e["event"] == "probe")
    status, message = _classify(watch, final, returncode, log_tail)
    metrics = {k: final[k] for k in ("val_bpb", "steps", "tokens", "training_seconds", "tokens_per_second",
                                     "peak_memory_mb") if final and k in final}
    if not metrics.get("steps"):
        progress = [e for e in watch.events if e["event"] in ("progress", "probe")]
        if progress:  # a killed run still says how far it got
            metrics.update(steps=progress[-1]["step"], tokens=progress[-1]["tokens"],
                           training_seconds=progress[-1]["seconds"])
    if status is not Status.OK:
        metrics.pop("val_bpb", None)
    metrics.setdefault("peak_memory_mb", watch.peak_rss_mb)
    extra = {k: v for k, v in start.items() if k not in ("event", "device")}
    extra.update({k: final[k] for k in ("parameters", "startup_seconds", "eval_seconds") if final and k in final})
    extra["peak_rss_mb"] = round(watch.peak_rss_mb, 1)
    return EvalResult(status=status, message=message, curve=curve, wall_seconds=wall, device=start.get("device", spec.device),
                      budget=str(spec.budget), budget_unit=spec.budget.unit.value, seed=spec.seed, split=spec.split,
                      log_tail=log_tail, extra=extra, **metrics)


def _classify(watch: _Watch, final: dict | None, returncode: int, log_tail: str) -> tuple[Status, str]:
    if watch.killed_for is not None:
        return watch.killed_for, watch.kill_message
    if final is not None:
        return Status(final["status"]), final.get("message", "")
    if returncode < 0:
        if returncode == -9:  # not ours: the kernel's OOM killer is the usual sender
            return Status.OOM, "killed by SIGKILL, most likely the system ran out of memory"
        return Status.CRASH, f"killed by signal {-returncode}"
    last_line = next((line for line in reversed(log_tail.splitlines()) if line.strip()), "")
    if returncode == 0:
        return Status.INVALID, "the script ended without calling runtime.finish(model)"
    return Status.CRASH, f"exited with code {returncode}: {last_line}"[:300]


def _tail(log_path: Path) -> str:
    try:
        text = log_path.read_bytes()[-_LOG_TAIL_CHARS * 4 :].decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-_LOG_TAIL_LINES:])[-_LOG_TAIL_CHARS:]


def _compat_result(spec: RunSpec, watch: _Watch, returncode: int, wall: float, log_tail: str) -> EvalResult:
    status, message = _classify(watch, None, returncode, log_tail)
    printed = printed_metrics(log_tail)
    if status is Status.INVALID:  # exited 0: a compat script's contract is the printed line
        status, message = (Status.OK, "compatibility mode: score printed by the script itself") if "val_bpb" in printed \
            else (Status.INVALID, "compatibility mode: the script printed no `val_bpb:` line")
    if status is Status.OK and not math.isfinite(printed["val_bpb"]):
        status, message = Status.NAN, f"the script printed val_bpb: {printed['val_bpb']}"
    if status is not Status.OK:
        printed.pop("val_bpb", None)
    printed.setdefault("peak_memory_mb", watch.peak_rss_mb)
    seconds = printed.get("training_seconds", 0.0)
    return EvalResult(status=status, message=message, trusted=False, wall_seconds=wall, device=spec.device,
                      budget="set by the script", budget_unit="script", seed=spec.seed, split=spec.split,
                      log_tail=log_tail, tokens_per_second=printed.get("tokens", 0) / seconds if seconds else 0.0,
                      **printed)


def support_files(script: Path) -> dict[str, str]:
    """Python files beside a script (autoresearch's train.py imports its prepare.py)."""
    return {p.name: p.read_text() for p in sorted(script.parent.glob("*.py")) if p.name != script.name}
