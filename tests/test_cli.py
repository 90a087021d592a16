"""The `search` command line, driven as a user drives it: a real process, real output."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from search.cli import cli
from tests.conftest import tiny_script

README = Path(__file__).resolve().parent.parent / "README.md"


def search(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "search", *args], capture_output=True, text=True, timeout=timeout)


def test_help_does_not_import_torch():
    probe = "import sys; from search.cli import cli; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "False"


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_every_command_has_help_and_is_in_the_readme(name):
    command = cli.commands[name]
    assert command.help and command.help.strip()
    assert all(param.help for param in command.params if param.param_type_name == "option"), name
    assert f"search {name}" in README.read_text()


def test_evolve_has_one_option_per_config_field_with_the_configs_default():
    from search.config import EvolveConfig, options

    params = {p.name: p for p in cli.commands["evolve"].params}
    defaults = EvolveConfig(run_dir=Path("x"))
    for field in options():
        param = params[field.name]
        assert param.help == field.metadata["help"]
        parse = field.metadata["parse"]
        default = parse(param.default) if parse and isinstance(param.default, str) else param.default
        assert default == getattr(defaults, field.name), field.name


@pytest.mark.parametrize("args, words", [
    (["evolve", "--time", "10M"], "is not a duration"),
    (["evolve", "--compute", "lots"], "cannot read budget"),
    (["evolve", "--fractions", "a third"], "cannot read rung fractions"),
    (["run", "no/such/train.py"], "no such file"),
    (["run", "--dataset", "wikipedia"], "unknown dataset"),
    (["run", "--dataset", "text:/no/such/folder"], "does not exist"),
    (["run", "--budget", "5m"], "ambiguous"),
    (["run", "--device", "tpu"], "unknown device"),
    (["prepare", "--tokenizer", "wordpiece"], "unknown tokenizer"),
])
def test_bad_input_is_one_clear_line(args, words):
    result = search(*args)
    assert result.returncode == 2
    assert result.stderr.startswith("Error: ") and words in result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr


def test_run_prints_a_summary_block(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(tiny_script())
    result = search("run", str(script), "--budget", "8k", "--device", "cpu", "--threads", "1")
    assert result.returncode == 0, result.stderr
    for key in ("status", "val_bpb", "steps", "tokens", "tokens/s", "peak memory", "wall time", "compute", "isolation"):
        assert key in result.stdout
    assert "probe" in result.stderr  # progress is streamed while it trains


def test_run_json_output_is_the_result(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(tiny_script())
    result = search("run", str(script), "--budget", "8k", "--device", "cpu", "--format", "json")
    data = json.loads(result.stdout)
    assert data["status"] == "ok" and data["val_bpb"] > 0 and data["budget_unit"] == "tokens"


def test_failed_run_exits_nonzero_and_shows_the_log_tail(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(tiny_script(before_finish="raise RuntimeError('boom')"))
    result = search("run", str(script), "--budget", "4k", "--device", "cpu")
    assert result.returncode == 1
    assert "crash" in result.stdout and "RuntimeError: boom" in result.stderr


def test_run_accepts_a_printed_score_only_in_compatibility_mode(tmp_path):
    script = tmp_path / "train.py"
    script.write_text("print('val_bpb:          0.900000')\n")
    refused = search("run", str(script), "--device", "cpu", "--format", "json")
    assert refused.returncode == 1 and "--compat" in json.loads(refused.stdout)["message"]
    accepted = search("run", str(script), "--device", "cpu", "--compat", "--format", "json")
    data = json.loads(accepted.stdout)
    assert accepted.returncode == 0 and data["val_bpb"] == 0.9 and data["trusted"] is False


def test_prepare_reports_the_splits():
    result = search("prepare", "--format", "json")
    data = json.loads(result.stdout)
    assert data["name"] == "shakespeare" and data["vocab_size"] == 256
    assert all(data["tokens"][split] > 0 for split in ("train", "val", "test"))


def test_catalog_lists_moves_and_why_some_do_not_apply():
    result = search("catalog", "--format", "json")
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert len(rows) >= 25
    assert rows["rmsnorm"]["applies"] == "yes"
    assert rows["attn_temperature"]["applies"] == "no" and "qk_norm" in rows["attn_temperature"]["why not"]


def test_mutate_prints_a_diff_and_writes_the_variant(tmp_path):
    out = tmp_path / "variant.py"
    result = search("mutate", "--move", "relu2", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("diff --git a/train.py b/train.py")
    assert "+        return self.dropout(self.proj(F.relu(self.fc(x)).square()))" in result.stdout
    assert "F.relu(self.fc(x)).square()" in out.read_text()
    assert "MLP.forward" in result.stderr and "validation: ok" in result.stderr


def test_mutate_with_a_move_that_does_not_apply_says_why():
    result = search("mutate", "--move", "attn_temperature")
    assert result.returncode == 2 and "needs qk_norm" in result.stderr
    unknown = search("mutate", "--move", "rmsnrom")
    assert unknown.returncode == 2 and "unknown move 'rmsnrom'" in unknown.stderr


def test_knobs_lists_the_baseline_constants():
    rows = json.loads(search("knobs", "--format", "json").stdout)
    by_name = {row["name"]: row for row in rows}
    assert by_name["LEARNING_RATE"]["distribution"].startswith("log[")
    assert by_name["HEADS"]["divides"] == "WIDTH"


def test_propose_from_the_catalog_prints_a_diff():
    result = search("propose", "--seed", "3", "--format", "json")
    data = json.loads(result.stdout)
    assert data["mutation"]["name"].startswith("catalog:") and data["diff"].startswith("diff --git")


def test_propose_with_the_llm_and_no_key_points_to_the_catalog(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    result = search("propose", "--mutator", "anthropic")
    assert result.returncode == 2 and "--mutator catalog" in result.stderr
    assert result.stderr.strip().count("\n") == 0
