"""The runner's batch server: it counts the data it serves, keeps the clock and holds the budget."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from trainer.batch_server import FIRST_STEP_BATCHES, WARMUP_SECONDS, BatchServer
from trainer.batches import TrainBatches, probe_rows
from trainer.budget import Budget
from trainer.result import Status
from trainer.spec import RunSpec

TOKENS = (np.arange(50_000) % 251).astype(np.uint8)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def server(budget: str = "4096tok", clock: Clock | None = None, probes=(0.5,), warmup_steps: int = 1):
    spec = RunSpec.for_device("cpu", budget=Budget.parse(budget), seed=0, dataset_root="unused", probes=probes)
    spec = replace(spec, profile=replace(spec.profile, probe_rows=4, warmup_steps=warmup_steps))
    events: list[dict] = []
    return BatchServer(spec, TOKENS, events.append, clock or Clock()), events


def step(batch_server: BatchServer, rows: int = 8, seq_len: int = 128, loss: float = 2.0, answer_probe: bool = True,
         **extra) -> tuple[dict, bytes]:
    """One step as the runtime takes it (answering a probe the server asks for, unless told not to)."""
    assert batch_server.handle({"type": "begin"})[0]["go"]
    answer, data = batch_server.handle({"type": "batch", "rows": rows, "seq_len": seq_len})
    assert not answer.get("refused"), answer
    answer, data = batch_server.handle({"type": "step", "loss": loss, **extra})
    if answer.get("probe") and answer_probe:
        batch_server.handle({"type": "probe", "val_bpb": 1.0})
    return answer, data


def test_tokens_are_counted_by_the_server_and_the_budget_ends_the_run():
    batch_server, _ = server("4096tok")
    for _ in range(4):
        step(batch_server)
    assert batch_server.tokens == 4096 and batch_server.steps == 4
    assert batch_server.handle({"type": "begin"})[0] == {"progress": 1.0, "go": False}
    answer, _ = batch_server.handle({"type": "batch", "rows": 8, "seq_len": 128})
    assert answer["refused"] and answer["status"] == "over_budget" and "keep_training" in answer["message"]
    assert batch_server.failure[0] is Status.OVER_BUDGET and batch_server.tokens == 4096


def test_batches_are_the_seeds_windows_and_never_the_held_out_probe_rows():
    batch_server, _ = server("1M")
    batch_server.handle({"type": "begin"})
    answer, data = batch_server.handle({"type": "batch", "rows": 8, "seq_len": 16})
    window = np.frombuffer(data, dtype=answer["dtype"]).reshape(answer["shape"])
    held_out = probe_rows(TOKENS, 128, 4)
    expected = TrainBatches(TOKENS, 128, seed=0, held_out=held_out.size).next(8, 16)
    assert (window == expected).all() and window.shape == (8, 17)
    starts = TrainBatches(TOKENS, 128, seed=0, held_out=held_out.size)._offsets(10_000)
    assert starts.max() + 129 <= len(TOKENS) - held_out.size  # no window reaches the probe rows


def test_a_step_begun_in_time_may_finish_but_not_take_more_than_any_earlier_step():
    batch_server, _ = server("3000tok", probes=())
    for _ in range(2):  # steps of two batches of 1024 tokens
        batch_server.handle({"type": "begin"})
        for _ in range(2):
            batch_server.handle({"type": "batch", "rows": 8, "seq_len": 128})
        batch_server.handle({"type": "step", "loss": 1.0})
    assert batch_server.handle({"type": "begin"})[0]["go"] is False
    batch_server, _ = server("3000tok", probes=())
    step(batch_server)
    step(batch_server)
    batch_server.handle({"type": "begin"})  # begun with 2048 of 3000 tokens spent
    assert not batch_server.handle({"type": "batch", "rows": 8, "seq_len": 128})[0].get("refused")
    answer, _ = batch_server.handle({"type": "batch", "rows": 8, "seq_len": 128})  # past the budget, a 2nd batch
    assert answer["refused"] and "more than any earlier step" in answer["message"]


def test_the_first_step_may_accumulate_a_bounded_number_of_batches():
    batch_server, _ = server("1tok")
    batch_server.handle({"type": "begin"})
    for _ in range(FIRST_STEP_BATCHES):
        assert not batch_server.handle({"type": "batch", "rows": 1, "seq_len": 8})[0].get("refused")
    assert batch_server.handle({"type": "batch", "rows": 1, "seq_len": 8})[0]["refused"]


def test_warm_up_steps_and_probes_are_left_out_of_a_wall_clock_budget():
    clock = Clock()
    batch_server, events = server("1000s", clock, probes=(0.055,), warmup_steps=1)
    clock.now += 30  # start-up before the first batch: not training
    step(batch_server)
    clock.now += 50  # the first (warm-up) step: compilation
    step(batch_server)
    assert batch_server.training_seconds == 50.0  # only the second step counted
    batch_server._mark = clock.now - 6  # six more seconds of the third step
    answer, rows = step(batch_server, answer_probe=False)
    assert answer["probe"] and np.frombuffer(rows, dtype=answer["dtype"]).size == 4 * 129
    clock.now += 100  # the probe itself
    batch_server.handle({"type": "probe", "val_bpb": 3.5})
    assert events[-1]["event"] == "probe" and events[-1]["val_bpb"] == 3.5
    clock.now += 1
    step(batch_server)
    assert batch_server.training_seconds == pytest.approx(50 + 6 + 1)


def test_warm_up_is_untimed_only_up_to_its_cap():
    clock = Clock()
    batch_server, _ = server("1000s", clock, probes=(), warmup_steps=1)
    batch_server.handle({"type": "begin"})
    batch_server.handle({"type": "batch", "rows": 8, "seq_len": 128})  # the clock starts here
    clock.now += WARMUP_SECONDS + 25  # an endless first step: training for free, were it all untimed
    batch_server.handle({"type": "step", "loss": 1.0})
    assert batch_server.training_seconds == pytest.approx(25)


def test_nothing_but_the_probe_result_may_come_while_a_probe_is_untimed():
    batch_server, _ = server("1M", probes=(0.0,))
    answer, _ = step(batch_server, answer_probe=False)
    assert answer["probe"]
    answer, _ = batch_server.handle({"type": "batch", "rows": 8, "seq_len": 128})
    assert answer["refused"] and "before the probe's result" in answer["message"]


def test_a_flop_budget_meters_the_declared_flops_and_needs_the_declaration():
    batch_server, _ = server("3Mflop")
    step(batch_server, rows=1, seq_len=100, flops_per_token=1000.0)  # 100 tokens x 3 x 1000 = 300k FLOPs
    assert batch_server.progress() == pytest.approx(0.1)
    undeclared, _ = server("3Mflop")
    step(undeclared, rows=1, seq_len=100)
    answer, _ = undeclared.handle({"type": "begin"})
    assert answer["refused"] and "FLOPs per token" in answer["message"]


@pytest.mark.parametrize("request_, status, words", [
    ({"type": "batch", "rows": 0, "seq_len": 8}, "invalid", "batch_size > 0"),
    ({"type": "batch", "rows": 8, "seq_len": 4096}, "invalid", "seq_len <= 128"),
    ({"type": "step", "loss": 1.0}, "invalid", "without a runtime.next_batch"),
    ({"type": "probe", "val_bpb": 0.1}, "invalid", "nobody asked for"),
    ({"type": "result", "val_bpb": 0.01}, "invalid", "unknown request"),
])
def test_requests_outside_the_contract_are_refused(request_, status, words):
    batch_server, _ = server()
    answer, _ = batch_server.handle(request_)
    assert answer["refused"] and answer["status"] == status and words in answer["message"]


def test_a_non_finite_training_loss_ends_the_run_as_nan():
    batch_server, _ = server()
    batch_server.handle({"type": "begin"})
    batch_server.handle({"type": "batch", "rows": 8, "seq_len": 128})
    answer, _ = batch_server.handle({"type": "step", "loss": "nan"})
    assert answer["status"] == "nan" and "step 1" in answer["message"]
