"""val_bpb exactness and the causality check, on models built in the test."""
from __future__ import annotations

import math
from contextlib import nullcontext

import numpy as np
import pytest
import torch
import torch.nn as nn

from trainer.evaluation import RunFailure, bits_per_byte, find_leak, validation_rows
from trainer.result import Status

CPU = torch.device("cpu")


class Uniform(nn.Module):
    """Equal logits everywhere: exactly log2(vocab) bits per token."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.vocab_size = vocab_size

    def forward(self, idx):
        return torch.zeros(*idx.shape, self.vocab_size)


class CausalConv(nn.Module):
    """Sees the current and previous token only; `lookahead` lets it peek at the next one."""

    def __init__(self, vocab_size: int, lookahead: bool = False) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab_size, 16)
        self.head = nn.Linear(16, vocab_size)
        self.lookahead = lookahead

    def forward(self, idx):
        h = self.emb(idx)
        previous = torch.cat([torch.zeros_like(h[:, :1]), h[:, :-1]], dim=1)
        h = h + previous
        if self.lookahead:
            h = h + torch.cat([h[:, 1:], torch.zeros_like(h[:, :1])], dim=1)
        return self.head(h)


def rows(vocab_size: int = 256, n: int = 4097, seq_len: int = 64):
    tokens = np.random.default_rng(0).integers(0, vocab_size, n).astype(np.uint8 if vocab_size <= 256 else np.uint16)
    return validation_rows(tokens, seq_len, n)


def bpb(model, inputs, targets, token_bytes):
    return bits_per_byte(model, inputs, targets, token_bytes, batch_rows=16, autocast=nullcontext(), device=CPU)


def test_uniform_predictor_over_bytes_scores_exactly_eight():
    inputs, targets = rows()
    assert bpb(Uniform(256), inputs, targets, torch.ones(256, dtype=torch.int64)) == 8.0


def test_bpb_divides_by_bytes_and_skips_tokens_that_stand_for_none():
    vocab = 512
    inputs, targets = rows(vocab_size=vocab)
    token_bytes = torch.full((vocab,), 3, dtype=torch.int64)
    token_bytes[0] = 0  # a special token: neither its loss nor its bytes count
    counted = targets[targets != 0].numel()
    expected = counted * math.log(vocab) / (math.log(2) * 3 * counted)
    assert bpb(Uniform(vocab), inputs, targets, token_bytes) == pytest.approx(expected, rel=1e-12)


def test_validation_rows_are_fixed_windows_from_the_start():
    tokens = np.arange(1000, dtype=np.uint16)
    inputs, targets = validation_rows(tokens, seq_len=10, n_tokens=95)
    assert inputs.shape == (9, 10)
    assert inputs[1, 0].item() == 10 and targets[0, -1].item() == 10


def test_causal_model_passes_the_leak_check():
    torch.manual_seed(0)
    inputs, _ = rows()
    assert find_leak(CausalConv(256), inputs[:2], 256, nullcontext(), CPU, relative_tolerance=1e-4) is None


def test_model_that_peeks_one_token_ahead_is_caught():
    torch.manual_seed(0)
    inputs, _ = rows()
    message = find_leak(CausalConv(256, lookahead=True), inputs[:2], 256, nullcontext(), CPU, relative_tolerance=1e-4)
    assert message is not None and "not causal" in message


def test_logits_of_the_wrong_shape_are_invalid():
    inputs, targets = rows()

    class Flat(nn.Module):
        def forward(self, idx):
            return torch.zeros(idx.shape[0], 256)

    with pytest.raises(RunFailure) as failure:
        bpb(Flat(), inputs, targets, torch.ones(256, dtype=torch.int64))
    assert failure.value.status is Status.INVALID


def test_too_few_validation_tokens_for_one_row_names_both_numbers():
    with pytest.raises(RunFailure, match="1024 validation tokens .* fewer than one row of 2048"):
        validation_rows(np.arange(10_000) % 256, 2048, 1024)
