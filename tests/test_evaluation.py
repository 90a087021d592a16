"""val_bpb exactness, the scoring plan and the causality check, on models built in the test."""
from __future__ import annotations

import math
from contextlib import nullcontext

import numpy as np
import pytest
import torch
import torch.nn as nn

from trainer.evaluation import bits_per_byte
from trainer.plan import PlanError, scoring_plan
from trainer.result import Status
from trainer.scorer import score

CPU = torch.device("cpu")
TOKENS = np.random.default_rng(0).integers(0, 256, 20_000).astype(np.uint8)


class Uniform(nn.Module):
    """Equal logits everywhere: exactly log2(vocab) bits per token."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.vocab_size = vocab_size

    def forward(self, idx):
        return torch.zeros(*idx.shape, self.vocab_size)


class CausalConv(nn.Module):
    """Sees the current and previous token only; `lookahead` lets it peek at the next one, `mix` at
    the other rows of its call, `drift` adds noise."""

    def __init__(self, lookahead: bool = False, mix: bool = False, drift: float = 0.0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(256, 16)
        self.head = nn.Linear(16, 256)
        self.lookahead, self.mix, self.drift = lookahead, mix, drift

    def forward(self, idx):
        h = self.emb(idx)
        h = h + torch.cat([torch.zeros_like(h[:, :1]), h[:, :-1]], dim=1)
        if self.lookahead:
            h = h + torch.cat([h[:, 1:], torch.zeros_like(h[:, :1])], dim=1)
        if self.mix:
            h = h + h.mean(dim=0, keepdim=True)
        return self.head(h) + self.drift * torch.randn(*idx.shape, 256)


def plan(scored_tokens: int = 4096, seed: int = 0, tokens: np.ndarray = TOKENS, call_rows: int = 16):
    return scoring_plan(tokens, 64, scored_tokens, check_rows=16, call_rows=call_rows,
                        rng=np.random.default_rng(seed))


def scored(model, token_bytes=None, the_plan=None, tolerance: float = 1e-3) -> dict:
    token_bytes = torch.ones(256, dtype=torch.int64) if token_bytes is None else token_bytes
    with torch.no_grad():
        return score(model.eval(), the_plan or plan(), token_bytes, 256, torch.float32, CPU, tolerance)


def bpb(answer: dict) -> float:
    return answer["nats"] / (math.log(2) * answer["bytes"])


def test_uniform_predictor_over_bytes_scores_exactly_eight():
    answer = scored(Uniform(256))
    assert answer["status"] == "ok" and bpb(answer) == 8.0


def test_bpb_divides_by_bytes_and_skips_tokens_that_stand_for_none():
    vocab = 512
    window = torch.from_numpy(np.random.default_rng(0).integers(0, vocab, (9, 65)))
    inputs, targets = window[:, :-1], window[:, 1:]
    token_bytes = torch.full((vocab,), 3, dtype=torch.int64)
    token_bytes[0] = 0  # a special token: neither its loss nor its bytes count
    counted = targets[targets != 0].numel()
    expected = counted * math.log(vocab) / (math.log(2) * 3 * counted)
    got = bits_per_byte(Uniform(vocab), inputs, targets, token_bytes, batch_rows=4, autocast=nullcontext(), device=CPU)
    assert got == pytest.approx(expected, rel=1e-12)


def test_the_plan_scores_disjoint_windows_and_checks_other_rows_in_calls_of_one_shape():
    the_plan = plan()
    calls, width, seq_len = the_plan.inputs.shape
    assert width == 16 and seq_len == 64
    assert the_plan.scored_rows == 64 and the_plan.check_rows == 16
    has_targets = (the_plan.targets >= 0).any(axis=-1)
    assert has_targets.sum() == the_plan.scored_rows  # each scored row is scored exactly once
    rows = the_plan.inputs[has_targets]
    assert (the_plan.targets[has_targets][:, :-1] == rows[:, 1:]).all()  # targets are the next tokens
    starts = {bytes(row[:8]) for row in rows}
    windows = TOKENS[: (the_plan.scored_rows + the_plan.check_rows) * 65].reshape(-1, 65)
    assert starts == {bytes(w[:8].astype(np.int64)) for w in windows[: the_plan.scored_rows]}  # never check rows
    for call, row, other_call, other_row, last in the_plan.compare:
        a, b = the_plan.inputs[call, row], the_plan.inputs[other_call, other_row]
        assert (a[: last + 1] == b[: last + 1]).all() and (call, row) != (other_call, other_row)
        assert last == seq_len - 1 or a[last + 1] != b[last + 1]  # a twin's future differs from the cut on


def test_the_score_does_not_depend_on_the_plans_secret_order():
    first, second = scored(CausalConv(), the_plan=plan(seed=1)), scored(CausalConv(), the_plan=plan(seed=2))
    assert (first["nats"], first["bytes"]) == (second["nats"], second["bytes"])


def test_causal_model_passes_the_check():
    answer = scored(CausalConv())
    assert answer["status"] == "ok" and answer["deviation"] <= 1e-5


@pytest.mark.parametrize("cheat, what", [(dict(lookahead=True), "peeks at the next token"),
                                         (dict(mix=True), "reads the other rows of its call"),
                                         (dict(drift=0.01), "is not deterministic")])
def test_a_model_that_looks_beyond_its_row_prefix_is_a_leak(cheat, what):
    answer = scored(CausalConv(**cheat))
    assert answer["status"] == Status.LEAK.value, what
    assert "not causal" in answer["message"]


def test_logits_of_the_wrong_shape_are_invalid():
    class Flat(nn.Module):
        def forward(self, idx):
            return torch.zeros(idx.shape[0], 256)

    answer = scored(Flat())
    assert answer["status"] == Status.INVALID.value and "logits of shape" in answer["message"]


def test_non_finite_logits_are_nan_not_leak():
    class Broken(nn.Module):
        def forward(self, idx):
            return torch.full((*idx.shape, 256), float("nan"))

    assert scored(Broken())["status"] == Status.NAN.value


def test_too_few_validation_tokens_for_one_row_names_both_numbers():
    with pytest.raises(PlanError, match="1024 validation tokens .* fewer than one row of 2048"):
        scoring_plan(np.arange(10_000) % 256, 2048, 1024, 64, 32, np.random.default_rng(0))
