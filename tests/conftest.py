"""Shared fixtures: the prepared shakespeare dataset and small, fast CPU evaluation specs."""
from __future__ import annotations

import textwrap
import time
from dataclasses import replace

import psutil
import pytest

from trainer.runner import build_spec
from trainer.spec import RunSpec

# A tiny contract-following script (a bigram model); tests swap pieces of it.
TINY_SCRIPT = textwrap.dedent('''
    import torch, torch.nn as nn, torch.nn.functional as F
    from trainer import runtime

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(runtime.vocab_size, 32)
            self.head = nn.Linear(32, runtime.vocab_size)

        def forward(self, idx):
            {forward}

    model = Tiny()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    while {keep_going}:
        x, y = runtime.next_batch(8)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten()){loss_suffix}
        loss.backward()
        opt.step()
        opt.zero_grad()
        runtime.step(model, loss)
    {before_finish}
    runtime.finish(model)
''')


def tiny_script(forward: str = "return self.head(self.emb(idx))", keep_going: str = "runtime.keep_training()",
                loss_suffix: str = "", before_finish: str = "pass") -> str:
    return TINY_SCRIPT.format(forward=forward, keep_going=keep_going, loss_suffix=loss_suffix,
                              before_finish=before_finish)


def launcher_processes(parent: psutil.Process | None = None, role: str = "train") -> list[psutil.Process]:
    """The `python -m trainer.launch ROLE` interpreters under `parent` (default: this test process), waiting
    or running: one per sandbox (not the `unshare` that starts it, nor the interpreter that PID 1 forks)."""
    found = []
    for child in (parent or psutil.Process()).children(recursive=True):
        try:
            if _is_launcher(child, role) and not _is_launcher(child.parent(), role):
                found.append(child)
        except psutil.Error:
            continue
    return found


def _is_launcher(process: psutil.Process | None, role: str) -> bool:
    return process is not None and process.cmdline()[1:4] == ["-m", "trainer.launch", role]


def wait_gone(processes: list[psutil.Process], timeout_s: float = 60) -> list[psutil.Process]:
    """The processes still alive after up to `timeout_s` (a zombie counts as gone: killed, not yet reaped)."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = []
        for process in processes:
            try:
                if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                    alive.append(process)
            except psutil.NoSuchProcess:
                continue
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def edited(source: str, *replacements: tuple[str, str]) -> str:
    """source with each `old` (which must occur exactly once) replaced by `new`."""
    for old, new in replacements:
        assert source.count(old) == 1, f"expected exactly one {old!r} in the source"
        source = source.replace(old, new)
    return source


def refused(name: str, source: str) -> str:
    """The reason the catalog move `name` gives for not applying to source."""
    from mutations.catalog import MOVES, NotApplicable

    with pytest.raises(NotApplicable) as refusal:
        MOVES[name].apply(source)
    return str(refusal.value)


@pytest.fixture(scope="session")
def shakespeare_spec() -> RunSpec:
    """A CPU spec on shakespeare with a small validation set, so each evaluation takes seconds."""
    spec = build_spec("20k", seed=0, device="cpu", dataset="shakespeare", threads=1)
    return replace(spec, profile=replace(spec.profile, eval_tokens=4096, probe_rows=4))


@pytest.fixture
def make_spec(shakespeare_spec):
    def make(budget: str = "20k", **changes) -> RunSpec:
        from trainer.budget import Budget

        return replace(shakespeare_spec, budget=Budget.parse(budget), **changes)

    return make


# A tiny successive-halving search, for tests of what reads a finished run (analysis, export, report, ablate):
# its rungs, knob studies and combine step fill every table. At 8 steps a 3x learning rate gains about one bit
# per byte, so the run accepts changes, stacks, re-tunes and ablates them in a minute and a half on 2 idle cores.
TINY_EVOLVE = dict(strategy="asha", population=3, time_limit=None, budget="16k", fractions=(0.25, 0.5, 1.0),
                   seeds=(1, 2, 2), eta=2, device="cpu", device_kind="cpu", workers=2, stack_trials=1, test_seeds=2,
                   combine_max=3, eval_tokens=4096, alpha=0.1)


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
    """The run directory of a small, finished `search evolve` (read it, do not change it)."""
    from search.config import EvolveConfig
    from search.driver import Driver
    from search.progress import NullReporter

    run_dir = tmp_path_factory.mktemp("finished") / "run"
    config = EvolveConfig(run_dir=run_dir, mutator="catalog:higher_lr,smaller_batch,untied_head", generations=2,
                          tune_share=0.2, merge_share=0.2, **TINY_EVOLVE)
    Driver(config, NullReporter()).run()
    return run_dir
