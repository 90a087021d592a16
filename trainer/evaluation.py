"""How the runtime measures a model: validation bits per byte and the causality leak check.

val_bpb = summed cross-entropy in nats / (ln 2 * target bytes). Targets that stand for no
bytes (special tokens) are left out of both sums, so the number is comparable across
tokenizers; with the byte tokenizer every target is one byte and a uniform predictor
scores exactly 8.0.
"""
from __future__ import annotations

import math
from contextlib import AbstractContextManager

import numpy as np
import torch
import torch.nn.functional as F

from trainer.result import Status

_CE_CHUNK = 8192  # positions per float64 cross-entropy chunk: bounds the extra memory


class RunFailure(Exception):
    """The variant broke the contract; the status says how."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status


def validation_rows(tokens: np.ndarray, seq_len: int, n_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed (inputs, targets) rows of seq_len from the start of a split, at most n_tokens targets."""
    rows = min(n_tokens, len(tokens) - 1) // seq_len
    if rows < 1:
        raise RunFailure(Status.INVALID, f"{min(n_tokens, len(tokens) - 1)} validation tokens (of {len(tokens)} in the "
                                         f"split) are fewer than one row of {seq_len}")
    window = torch.from_numpy(np.asarray(tokens[: rows * seq_len + 1], dtype=np.int64))
    return window[:-1].view(rows, seq_len), window[1:].view(rows, seq_len)


def checked_logits(model: torch.nn.Module, x: torch.Tensor, vocab_size: int) -> torch.Tensor:
    logits = model(x)
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
            logits = checked_logits(model, x, vocab_size)
        for chunk, target in zip(logits.flatten(0, 1).split(_CE_CHUNK), y.flatten().split(_CE_CHUNK)):
            # float64 so the score depends on the logits alone, not on float32 rounding paths
            nats = F.cross_entropy(chunk.double(), target, reduction="none")
            n_bytes = token_bytes[target]
            total_nats += (nats * (n_bytes > 0)).sum()
            total_bytes += n_bytes.sum()
    return total_nats.item() / (math.log(2) * total_bytes.item())


@torch.no_grad()
def find_leak(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    vocab_size: int,
    autocast: AbstractContextManager,
    device: torch.device,
    relative_tolerance: float,
) -> str | None:
    """Change every token after position t; logits at positions <= t must not move.

    Returns a one-line description of the leak, or None for a causal model. The same
    input is run twice to measure the model's own run-to-run noise, so nondeterministic
    kernels do not read as leaks.
    """
    x = inputs.to(device)
    cut = x.shape[1] // 2
    generator = torch.Generator().manual_seed(0)
    shift = torch.randint(1, vocab_size, x[:, cut + 1 :].shape, generator=generator).to(device)
    perturbed = x.clone()
    perturbed[:, cut + 1 :] = (x[:, cut + 1 :] + shift) % vocab_size
    with autocast:
        reference = checked_logits(model, x, vocab_size).float()
        changed = checked_logits(model, perturbed, vocab_size).float()
        repeat = checked_logits(model, x, vocab_size).float()
    noise = (reference - repeat).abs().max().item()
    moved = (reference[:, : cut + 1] - changed[:, : cut + 1]).abs().max().item()
    tolerance = max(10 * noise, relative_tolerance * reference.abs().max().item(), 1e-6)
    if moved > tolerance:  # NaN logits are not a leak: finish() reports them as nan
        return (
            f"not causal: logits at positions <= {cut} moved by {moved:.3g} when only later tokens "
            f"changed (tolerance {tolerance:.2g}); the model looks ahead"
        )
    return None
