"""The red team's shared harness: a tiny contract-following script with hooks an attack fills in.

Every attack trains exactly like the honest script (same seed, same weights, same batches) and
differs only where it cheats, so "gains nothing" is a plain comparison with the honest score.
An attack passes its test when it is refused (a failing status) or gains nothing.
"""
from __future__ import annotations

import textwrap
from dataclasses import replace

import pytest

from trainer.result import EvalResult, Status
from trainer.runner import run_variant

# Fills: prelude (module level), init (Tiny.__init__), on_forward (start of every forward),
# eval_logits (forward in eval mode, may change `logits` using `idx`), optimizer_step, before_finish.
TEMPLATE = '''
import torch, torch.nn as nn, torch.nn.functional as F
from trainer import runtime
{prelude}

class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(runtime.vocab_size, 32)
        self.head = nn.Linear(32, runtime.vocab_size)
{init}

    def forward(self, idx):
{on_forward}
        logits = self.head(self.emb(idx))
        if not self.training:
{eval_logits}
        return logits

model = Tiny()
opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
while runtime.keep_training():
    x, y = runtime.next_batch(8)
    loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
    loss.backward()
{optimizer_step}
    opt.zero_grad()
    runtime.step(model, loss)
{before_finish}
runtime.finish(model)
'''

# In eval mode: the token after each position (the last position sees its own), and a one-hot
# "oracle" that puts 10 nats on it: what a model that looks ahead can add to its logits.
NEXT_TOKEN = """
nxt = torch.cat([idx[:, 1:], idx[:, -1:]], dim=1)
oracle = F.one_hot(nxt, logits.shape[-1]).to(logits.dtype) * 10.0
"""

# A table of what followed each 6-token context (hashed), and the eval-mode code that adds 10 nats
# to the remembered next token: how a model cashes in validation text it has got hold of.
MEMORY = """
self.register_buffer("memory", torch.full((1 << 20,), -1, dtype=torch.long))
"""
CONTEXT_KEY = """
def context_key(idx):
    key = torch.zeros_like(idx)
    for back in range(6):
        key = (key * 257 + torch.roll(idx, back, dims=1)) % (1 << 20)
    return key
"""
RECALL = """
seen = self.memory[context_key(idx)]
hit = (seen >= 0).to(logits.dtype)[..., None]
logits = logits + hit * F.one_hot(seen.clamp(min=0), logits.shape[-1]).to(logits.dtype) * 10.0
"""
# Given `stolen`, a 1-D tensor of validation tokens, fills the model's memory with them.
REMEMBER_STOLEN = """
if stolen is not None:
    print("stole", stolen.numel(), "validation tokens", flush=True)
    keys = context_key(stolen[None].long())[0]
    model.memory[keys[:-1]] = stolen[1:].long()
"""

GAIN_MARGIN = 0.02  # bits per byte: far above the run-to-run difference of the same seed (0)


def attack_source(prelude: str = "", init: str = "", on_forward: str = "", eval_logits: str = "pass",
                  optimizer_step: str = "opt.step()", before_finish: str = "") -> str:
    return TEMPLATE.format(prelude=textwrap.dedent(prelude), init=_indent(init, 8), on_forward=_indent(on_forward, 8),
                           eval_logits=_indent(eval_logits, 12), optimizer_step=_indent(optimizer_step, 4),
                           before_finish=textwrap.dedent(before_finish))


def admitted(result: EvalResult) -> EvalResult:
    """What the search keeps of a result (trainer.trust.admit with its default policy)."""
    try:
        from trainer.trust import TrustPolicy, admit
    except ImportError:  # before the trust boundary: the search never looked at `trusted`
        return result
    return admit(result, TrustPolicy())


def _indent(code: str, spaces: int) -> str:
    return textwrap.indent(textwrap.dedent(code).strip("\n"), " " * spaces) if code.strip() else ""


_SPARES: list = []


def run(source: str, spec, timeout_s: float = 180, **kwargs) -> EvalResult:
    """One evaluation, as the search runs it: with spare interpreters (shared by the whole suite,
    so each attack also meets the interpreters the one before it left waiting)."""
    if not _SPARES:
        from trainer.spares import Spares

        _SPARES.append(Spares())
    kwargs.setdefault("spares", _SPARES[0])
    return run_variant(source, spec, timeout_s=timeout_s, **kwargs)


def close_spares() -> None:
    """The suite's spare interpreters end with the suite (other tests count the interpreters they see)."""
    while _SPARES:
        _SPARES.pop().close()


def assert_refused_or_no_gain(attack: EvalResult, honest: EvalResult) -> None:
    """The attack failed (any failing status) or scored no better than the honest script."""
    assert honest.status is Status.OK, honest.message + honest.log_tail
    if attack.status is Status.OK:
        assert attack.val_bpb >= honest.val_bpb - GAIN_MARGIN, (
            f"the attack scored {attack.val_bpb:.4f} against the honest {honest.val_bpb:.4f}")


def attack_spec(spec, budget: str = "8k", **changes):
    """A small evaluation spec for attacks (shakespeare, CPU, one thread)."""
    from trainer.budget import Budget

    return replace(spec, budget=Budget.parse(budget), **changes)


def with_profile(spec, **changes):
    return replace(spec, profile=replace(spec.profile, **changes))


def namespaces_or_skip() -> None:
    """Attacks on the file system, processes and network are closed by the namespaces; without them
    (macOS, locked-down containers) the run falls back to the process sandbox, which does not."""
    try:
        from trainer.isolation import namespaces_available
    except ImportError:
        return
    if not namespaces_available():
        pytest.skip("needs user, PID, mount and network namespaces (util-linux unshare); unavailable here")
