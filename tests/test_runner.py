"""The sandboxed runner: real subprocesses, each ending the way a variant can end."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import psutil
import pytest

from tests.conftest import tiny_script, wait_gone
from trainer.baselines import BASELINE
from trainer.program import Program
from trainer.result import Status
from trainer.runner import run_variant
from trainer.sandbox import Child


def run(source: str, spec, timeout_s: float = 60, **kwargs):
    return run_variant(source, spec, timeout_s=timeout_s, **kwargs)


def test_tiny_script_trains_and_is_scored(make_spec):
    result = run(tiny_script(), make_spec("20k"))
    assert result.status is Status.OK, result.message + result.log_tail
    assert result.trusted
    assert 2.0 < result.val_bpb < 8.0  # a bigram model learns something in 20k bytes
    assert 20_000 <= result.tokens < 20_000 + 8 * 128  # stops within one batch of the budget
    assert result.steps == -(-20_000 // (8 * 128))
    assert [round(p.progress, 1) for p in result.curve] == [0.3, 0.5, 0.8]
    assert all(p.val_bpb > 0 for p in result.curve)
    assert result.budget == "20k" and result.budget_unit == "tokens"
    assert result.wall_seconds > result.training_seconds > 0


def test_baseline_is_deterministic_for_a_seed_with_a_token_budget(make_spec):
    source = BASELINE.read_text()
    first = run(source, make_spec("12k"))
    second = run(source, make_spec("12k"))
    other_seed = run(source, make_spec("12k", seed=1))
    assert first.status is Status.OK, first.message + first.log_tail
    assert first.val_bpb == second.val_bpb
    assert other_seed.val_bpb != first.val_bpb


def test_lookahead_model_is_reported_as_leak(make_spec):
    # Each position sees the mean embedding of the whole row, future tokens included.
    leaky = "h = self.emb(idx); return self.head(h + h.mean(dim=1, keepdim=True))"
    result = run(tiny_script(forward=leaky), make_spec("4k"))
    assert result.status is Status.LEAK
    assert "not causal" in result.message
    assert result.val_bpb is None


def test_baseline_with_attention_mask_removed_is_a_leak(make_spec):
    source = BASELINE.read_text().replace("is_causal=True", "is_causal=False")
    result = run(source, make_spec("4k"))
    assert result.status is Status.LEAK


def test_hanging_script_is_killed_at_the_deadline(make_spec):
    source = "from trainer import runtime\nimport time\ntime.sleep(600)\n"
    started = time.perf_counter()
    result = run(source, make_spec(), timeout_s=4)  # whether or not the interpreter got far, under load
    assert result.status is Status.TIMEOUT
    assert time.perf_counter() - started < 20


# Starts a grandchild, says so, then hangs: for the tests that end a run early.
SPAWNS_A_CHILD = textwrap.dedent("""
    import subprocess, time
    from trainer import runtime
    child = subprocess.Popen(["sleep", "600"])
    print("CHILD", child.pid, flush=True)
    time.sleep(600)
""")


def when_child_started(log_path, action) -> tuple[threading.Thread, list[psutil.Process]]:
    """Runs action in a thread once the script has started its child; the list then holds every
    process this test had started by then (the run's whole tree, inside its namespaces too)."""
    tree: list[psutil.Process] = []

    def watch() -> None:
        while not (log_path.exists() and "CHILD" in log_path.read_text()):
            time.sleep(0.05)
        tree.extend(psutil.Process().children(recursive=True))
        action()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread, tree


def assert_all_gone(processes: list[psutil.Process]) -> None:
    assert processes, "the run's processes were never seen"
    assert not wait_gone(processes)  # a kill takes effect a moment later


def test_stop_event_kills_the_run_and_everything_it_started_as_pruned(make_spec, tmp_path):
    stop, stopped_at = threading.Event(), []
    watcher, tree = when_child_started(tmp_path / "log.txt", lambda: (stopped_at.append(time.perf_counter()), stop.set()))
    result = run(SPAWNS_A_CHILD, make_spec(), timeout_s=600, log_path=tmp_path / "log.txt", stop=stop)
    watcher.join()
    assert result.status is Status.PRUNED and result.message == "stopped by the search"
    assert time.perf_counter() - stopped_at[0] < 3
    assert_all_gone(tree)


def test_interrupted_runner_still_kills_the_group(make_spec, tmp_path, monkeypatch):
    interrupted = threading.Event()
    watcher, tree = when_child_started(tmp_path / "log.txt", interrupted.set)
    measure = Child.memory_mb

    def memory_or_interrupt(child) -> float:  # the runner's watch, hit by Ctrl-C once the child runs
        if interrupted.is_set():
            raise KeyboardInterrupt
        return measure(child)

    monkeypatch.setattr(Child, "memory_mb", memory_or_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run(SPAWNS_A_CHILD, make_spec(), timeout_s=600, log_path=tmp_path / "log.txt")
    watcher.join()
    assert_all_gone(tree)


def test_memory_hog_is_stopped_as_oom(make_spec):
    source = "from trainer import runtime\nhog = []\nwhile True:\n    hog.append(b'x' * (50 << 20))\n"
    result = run(source, make_spec(), memory_mb=700)
    assert result.status is Status.OOM, result.message + result.log_tail


def test_crash_reports_the_error_and_the_log_tail(make_spec):
    result = run(tiny_script(before_finish="raise ValueError('shapes do not line up')"), make_spec("4k"))
    assert result.status is Status.CRASH
    assert "ValueError: shapes do not line up" in result.message
    assert "Traceback" in result.log_tail and "shapes do not line up" in result.log_tail


def test_nan_loss_is_reported_as_nan(make_spec):
    result = run(tiny_script(loss_suffix=" * float('nan')"), make_spec("8k"))
    assert result.status is Status.NAN
    assert "step 1" in result.message


def test_training_past_the_budget_is_over_budget(make_spec):
    result = run(tiny_script(keep_going="True"), make_spec("4k"))
    assert result.status is Status.OVER_BUDGET
    assert "keep_training" in result.message


def test_swallowing_the_runtime_error_does_not_hide_it(make_spec):
    body = tiny_script(keep_going="True").replace(
        "runtime.step(model, loss)", "try:\n        runtime.step(model, loss)\n    except Exception:\n        break"
    ).replace("        x, y = runtime.next_batch(8)", "        try:\n            x, y = runtime.next_batch(8)\n"
              "        except Exception:\n            break")
    result = run(body, make_spec("4k"))
    assert result.status is Status.OVER_BUDGET


def test_script_without_finish_is_invalid(make_spec):
    source = tiny_script().replace("runtime.finish(model)", "print('done')")
    result = run(source, make_spec("4k"))
    assert result.status is Status.INVALID
    assert "finish" in result.message


def test_wrong_logits_shape_is_invalid(make_spec):
    result = run(tiny_script(forward="return self.head(self.emb(idx))[:, :-1]"), make_spec("4k"))
    # training itself fails on the shape mismatch before finish is reached
    assert result.status in (Status.CRASH, Status.INVALID)
    finish_only = tiny_script(before_finish="model.forward = lambda idx: idx.float()")
    result = run(finish_only, make_spec("4k"))
    assert result.status is Status.INVALID
    assert "logits of shape" in result.message


def test_variant_environment_has_no_api_keys(make_spec, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret")
    source = tiny_script(before_finish="import os; print('ENV', sorted(os.environ))")
    result = run(source, make_spec("4k"))
    assert result.status is Status.OK
    env_line = next(line for line in result.log_tail.splitlines() if line.startswith("ENV"))
    assert "ANTHROPIC_API_KEY" not in env_line and "AWS_SECRET_ACCESS_KEY" not in env_line
    assert "EVOTRAIN_CACHE" not in env_line


def test_scheduler_can_stop_a_run_early(make_spec):
    seen = []

    def stop_at_first_probe(event):
        seen.append(event["event"])
        return event["event"] == "probe"

    result = run(tiny_script(), make_spec("200k"), on_event=stop_at_first_probe)
    assert result.status is Status.PRUNED
    assert result.val_bpb is None
    assert len(result.curve) >= 1 and result.steps > 0


def test_compat_mode_parses_the_printed_score_and_marks_it_untrusted(make_spec, tmp_path):
    source = textwrap.dedent("""
        from prepare import TIME_BUDGET
        print("---")
        print("val_bpb:          0.997900")
        print("training_seconds: 300.1")
        print("peak_vram_mb:     45060.2")
        print("total_tokens_M:   499.6")
        print("num_steps:        953")
    """)
    program = Program((("train.py", source), ("prepare.py", "TIME_BUDGET = 300\n")))
    result = run(program.text, make_spec())
    assert result.status is Status.OK, result.message + result.log_tail
    assert result.trusted is False
    assert result.val_bpb == pytest.approx(0.9979)
    assert result.steps == 953 and result.tokens == 499_600_000
    silent = run("print('no score here')", make_spec())
    assert silent.status is Status.INVALID and "val_bpb" in silent.message


@pytest.mark.skipif(os.cpu_count() < 2, reason="needs 2 cores to finish the baseline quickly")
def test_baseline_learns(make_spec):
    result = run(BASELINE.read_text(), make_spec("60k"))
    assert result.status is Status.OK
    assert result.val_bpb < result.curve[0].val_bpb < 8.0


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_smoke_runs_validate_at_least_one_row_of_the_devices_context(device):
    """A fixed 1024-token smoke validation is shorter than one CUDA row (2048): every structural
    child was refused on GPU before (found on an H200). Building the spec needs no GPU."""
    from trainer.budget import Budget
    from trainer.runner import for_smoke
    from trainer.spec import RunSpec

    spec = for_smoke(RunSpec.for_device(device, budget=Budget.parse("1tok"), seed=0, dataset_root="unused"))
    assert spec.profile.eval_tokens >= spec.profile.seq_len


def test_a_script_run_by_hand_hands_itself_to_the_runner_and_prints_the_result(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(tiny_script())
    env = {**os.environ, "EVOTRAIN_BUDGET": "4k", "EVOTRAIN_DEVICE": "cpu"}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    line = next(line for line in done.stderr.splitlines() if line.startswith("[evotrain result] "))
    result = json.loads(line.removeprefix("[evotrain result] "))
    assert result["status"] == "ok" and result["tokens"] >= 4000 and result["isolation"]
