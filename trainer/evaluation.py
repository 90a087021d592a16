"""How a model is measured: bits per byte, the logits contract, and the statuses of failures.

val_bpb = summed cross-entropy in nats / (ln 2 * target bytes). Targets that stand for no
bytes (special tokens) are left out of both sums, so the number is comparable across
tokenizers; with the byte tokenizer every target is one byte and a uniform predictor
scores exactly 8.0. The trusted scorer computes it on the validation rows (trainer/scorer.py);
the sandboxed runtime uses the same code for its probes on held-out training rows.
"""
from __future__ import annotations

import math
from contextlib import AbstractContextManager

import torch
import torch.nn.functional as F

from trainer.result import Status

_CE_CHUNK = 8192  # positions per float64 cross-entropy chunk: bounds the extra memory


class RunFailure(Exception):
    """The variant broke the contract; the status says how."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status


def status_of(error: BaseException) -> Status:
    """The status of an exception that ended a run: out of memory, or a crash."""
    if isinstance(error, (MemoryError, torch.OutOfMemoryError)):
        return Status.OOM
    text = str(error)
    if isinstance(error, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text):
        return Status.OOM  # the CPU allocator's words under the address-space limit
    return Status.CRASH


def one_line(error: BaseException) -> str:
    detail = str(error).strip().splitlines()
    return f"{type(error).__name__}: {detail[0] if detail else ''}".strip()[:300]


def checked_logits(logits: object, x: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """The model's output for input x, if it is logits of shape (batch, time, vocab >= vocab_size)."""
    if not isinstance(logits, torch.Tensor):
        raise RunFailure(Status.INVALID, f"model(idx) must return a logits tensor, but returned {type(logits).__name__}")
    if logits.dim() != 3 or tuple(logits.shape[:2]) != tuple(x.shape) or logits.shape[2] < vocab_size:
        raise RunFailure(
            Status.INVALID,
            f"model(idx) must return logits of shape (batch, time, vocab>={vocab_size}) = "
            f"({x.shape[0]}, {x.shape[1]}, ...), but returned {tuple(logits.shape)}",
        )
    return logits


@torch.no_grad()
def bits_per_byte(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    token_bytes: torch.Tensor,
    batch_rows: int,
    autocast: AbstractContextManager,
    device: torch.device,
) -> float:
    """Summed cross-entropy over all rows, in bits per target byte."""
    vocab_size = len(token_bytes)
    token_bytes = token_bytes.to(device)
    total_nats = torch.zeros((), dtype=torch.float64, device=device)
    total_bytes = torch.zeros((), dtype=torch.int64, device=device)
    for start in range(0, len(inputs), batch_rows):
        x = inputs[start : start + batch_rows].to(device, non_blocking=True)
        y = targets[start : start + batch_rows].to(device, non_blocking=True)
        with autocast:
            logits = checked_logits(model(x), x, vocab_size)
        nats, n_bytes = target_nats(logits.flatten(0, 1), y.flatten(), token_bytes)
        total_nats += nats.sum()
        total_bytes += n_bytes.sum()
    return total_nats.item() / (math.log(2) * total_bytes.item())


def target_nats(logits: torch.Tensor, targets: torch.Tensor, token_bytes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(cross-entropy in nats of each position, 0 where the target stands for no bytes; target bytes),
    in float64 so the score depends on the logits alone, not on float32 rounding paths."""
    nats = torch.cat([F.cross_entropy(chunk.double(), target, reduction="none")
                      for chunk, target in zip(logits.split(_CE_CHUNK), targets.split(_CE_CHUNK))]) \
        if len(targets) else torch.zeros(0, dtype=torch.float64, device=logits.device)
    n_bytes = token_bytes[targets]
    return nats * (n_bytes > 0), n_bytes
