"""The trusted scorer: runs a variant's exported model on the scoring plan and measures it.

It runs in its own sandboxed process (`python -m trainer.launch score`), never in the training
process: no line of the variant's code runs in it, only the checked operator graph of its model
(trainer/graph.py), which holds no state between calls. The runner sends the graph, the rows of
the plan (trainer/plan.py) and the token byte lengths; the scorer answers with

- the summed cross-entropy (float64) and target bytes of the scored rows, so val_bpb;
- the largest change of any compared log-probability between a check row and its twin (or a
  row and its copy): over the profile's capped tolerance, the model looks ahead, mixes rows or
  is nondeterministic, and the run is a leak, whatever its score;
- the forward CPU seconds (wall seconds on a GPU) per token, what the runner prices compute with,
  and for a FLOP budget the forward FLOPs per token (torch's FlopCounterMode, on fake tensors).
"""
from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch

from trainer import protocol
from trainer.evaluation import RunFailure, checked_logits, one_line, target_nats
from trainer.graph import Graph, GraphError
from trainer.plan import ScoringPlan, plan_from_frame
from trainer.result import Status

_MAX_JOB_BYTES = 1 << 40  # the runner caps what it forwards; this only guards the frame reader


def serve(connection: socket.socket, job: dict, weights: int, device: str) -> int:
    """The scorer role: one model (its tensors' file as descriptor `weights`), one plan, one answer."""
    if job.get("threads"):
        torch.set_num_threads(job["threads"])
    try:
        header, data, _ = protocol.recv(connection, _MAX_JOB_BYTES)
        graph = Graph.parse(job["graph"], _read_all(weights), torch.device(device))
        answer = score(graph, plan_from_frame(header, data), torch.tensor(job["token_bytes"], dtype=torch.int64),
                       job["vocab_size"], getattr(torch, job["dtype"]), torch.device(device), job["tolerance"],
                       count_flops=job.get("count_flops", False))
    except GraphError as error:
        answer = {"status": Status.INVALID.value, "message": str(error)}
    protocol.send(connection, {"type": "score", **answer})
    return 0


def score(graph: Callable[[torch.Tensor], Any], plan: ScoringPlan, token_bytes: torch.Tensor, vocab_size: int,
          dtype: torch.dtype, device: torch.device, tolerance: float, count_flops: bool = False) -> dict:
    """Run every call of the plan through `graph`; the measurements as a dict (see the module doc)."""
    autocast = nullcontext() if dtype == torch.float32 else torch.autocast(device_type=device.type, dtype=dtype)
    token_bytes = token_bytes.to(device)
    pending = _pairs(plan.compare)
    kept: dict[tuple[int, int], torch.Tensor] = {}
    nats_by_call: list[np.ndarray] = []
    total_bytes = 0
    deviation = 0.0
    call_seconds = []
    started = time.perf_counter()
    for call in range(len(plan.inputs)):
        inputs = torch.tensor(plan.inputs[call], device=device)
        clock = _Clock(device)
        try:
            with torch.inference_mode(), autocast:
                logits = checked_logits(graph(inputs), inputs, vocab_size)
        except RunFailure as failure:
            return {"status": failure.status.value, "message": str(failure)}
        except Exception as error:  # noqa: BLE001 - a graph that fails to run is the model's fault
            return {"status": Status.INVALID.value, "message": f"the model failed when scored: {one_line(error)}"}
        call_seconds.append(clock.seconds())
        targets = torch.tensor(plan.targets[call], device=device)
        scored = targets >= 0
        nats, n_bytes = target_nats(logits[scored], targets[scored], token_bytes)
        nats_by_call.append(nats.cpu().numpy())
        total_bytes += int(n_bytes.sum().item())
        for row, last, partner in pending.get(call, ()):
            log_probs = torch.log_softmax(logits[row, : last + 1].float(), dim=-1)
            other = kept.pop(partner, None)
            if other is None:
                kept[(call, row)] = log_probs
            else:
                moved = (log_probs - other).abs().max().item()
                deviation = max(deviation, moved if math.isfinite(moved) else math.inf)
    nats_total = math.fsum(np.concatenate(nats_by_call).tolist())  # exactly rounded: the order of the rows is random
    bytes_total = total_bytes
    per_call = float(np.median(call_seconds[1:] if len(call_seconds) > 2 else call_seconds))  # the first warms up
    answer = {"nats": nats_total, "bytes": bytes_total, "deviation": deviation, "compared": len(plan.compare),
              "forward_seconds_per_token": per_call / plan.inputs[0].size,
              "eval_seconds": time.perf_counter() - started}
    if count_flops:
        answer["flops_per_token"] = forward_flops(graph, plan.inputs[0], device) / plan.inputs[0].size
    if not math.isfinite(nats_total):
        return {**answer, "status": Status.NAN.value, "message": f"validation loss is {nats_total}"}
    if deviation > tolerance:
        return {**answer, "status": Status.LEAK.value, "message": (
            f"not causal: a log-probability at a position before a cut moved by {deviation:.3g} nats (tolerance "
            f"{tolerance:g}) when only later tokens or other rows of the call changed; the model looks ahead, "
            "mixes rows, or is not deterministic")}
    return {**answer, "status": Status.OK.value, "message": ""}


def forward_flops(graph: Callable[[torch.Tensor], Any], inputs: np.ndarray, device: torch.device) -> float:
    """FLOPs of one call, counted by torch's FlopCounterMode on fake tensors (shapes only: ~60 ms, and
    0.9 s more the first time in a process, for the imports)."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with FakeTensorMode(allow_non_fake_inputs=True) as fake, counter, torch.no_grad():
        graph(fake.from_tensor(torch.tensor(inputs, device=device)))
    return float(counter.get_total_flops())


def _read_all(fd: int) -> bytes:
    """The whole file, read (not mapped: a file the variant truncates under a mapping kills the reader)."""
    chunks, offset = [], 0
    while chunk := os.pread(fd, 1 << 24, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


class _Clock:
    """Forward time: CPU seconds of this process on CPU (what the training run is charged in too),
    wall seconds on a GPU (after a synchronize)."""

    def __init__(self, device: torch.device) -> None:
        self._cuda = device.type == "cuda"
        self._start = self._now()

    def _now(self) -> float:
        if self._cuda:
            torch.cuda.synchronize()
            return time.perf_counter()
        return time.process_time()

    def seconds(self) -> float:
        return self._now() - self._start


def _pairs(compare: np.ndarray) -> dict[int, list[tuple[int, int, tuple[int, int]]]]:
    """call -> (row, last compared position, the partner's (call, row)) for both members of every pair."""
    pending: dict[int, list] = {}
    for call, row, other_call, other_row, last in compare.tolist():
        pending.setdefault(call, []).append((row, last, (other_call, other_row)))
        pending.setdefault(other_call, []).append((other_row, last, (call, row)))
    return pending
