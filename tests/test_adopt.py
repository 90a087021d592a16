"""`search adopt`: nanoGPT- and autoresearch-shaped scripts (tests/fixtures/adopt, written for this project)
rewritten to the runtime contract; golden files; refusals naming their lines; the adopted scripts train.

Regenerate the golden files after a deliberate change with `python -m tests.test_adopt`, then review the diff.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import libcst as cst
import pytest

from mutations.adopt import AdoptError, adopt

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "adopt"
SHAPES = ("nanogpt", "autoresearch")


def search(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "search", *args], capture_output=True, text=True, timeout=timeout,
                          check=False)


def regenerate() -> None:
    for shape in SHAPES:
        expected = FIXTURES / shape / "expected"
        expected.mkdir(exist_ok=True)
        for name, (_, adopted) in adopt(FIXTURES / shape / "train.py").files.items():
            (expected / name).write_text(adopted, encoding="utf-8")


# -------------------------------------------------------------------- golden files
@pytest.mark.parametrize("shape", SHAPES)
def test_the_codemod_gives_the_expected_files(shape):
    adoption = adopt(FIXTURES / shape / "train.py")
    expected = FIXTURES / shape / "expected"
    assert sorted(adoption.files) == sorted(p.name for p in expected.glob("*.py"))
    for name, (original, adopted) in adoption.files.items():
        assert original == (FIXTURES / shape / name).read_text()
        assert adopted == (expected / name).read_text(), f"{shape}/{name}: python -m tests.test_adopt regenerates"
        cst.parse_module(adopted)
        compile(adopted, name, "exec")


def test_nanogpt_carries_model_py_and_not_the_configurator():
    adoption = adopt(FIXTURES / "nanogpt" / "train.py")
    assert list(adoption.files) == ["train.py", "model.py"] and adoption.left_out == ["configurator.py"]
    original, adopted = adoption.files["model.py"]
    assert adopted == original.replace("targets.view(-1)", "targets.reshape(-1)")  # the one change it needs


def test_nanogpt_adopted_follows_the_contract():
    train = adopt(FIXTURES / "nanogpt" / "train.py").files["train.py"][1]
    for wanted in ("from trainer import runtime", "while runtime.keep_training():", "block_size = runtime.seq_len",
                   "meta_vocab_size = runtime.vocab_size", "X, Y = runtime.next_batch(batch_size, block_size)",
                   "get_lr(int(runtime.progress() * max_iters))", "with runtime.autocast():",
                   "runtime.step(full_logits, loss)", "full_logits = FullLogits(model)",
                   "runtime.finish(full_logits)", "device = str(runtime.device)"):
        assert wanted in train, wanted
    for gone in ("exec(", "if ddp", "DDP(", "process_group", "wandb", "master_process", "init_from", "torch.save",
                 "torch.load", "estimate_loss", "get_batch", "pickle", "np.memmap", "break", "GradScaler(enabled=("):
        assert gone not in train, gone


def test_autoresearch_adopted_follows_the_contract():
    adoption = adopt(FIXTURES / "autoresearch" / "train.py")
    train = adoption.files["train.py"][1]
    assert list(adoption.files) == ["train.py"] and adoption.left_out == ["prepare.py"]
    for wanted in ("MAX_SEQ_LEN = runtime.seq_len", "vocab_size = runtime.vocab_size", "device = runtime.device",
                   "x, y = runtime.next_batch(DEVICE_BATCH_SIZE, MAX_SEQ_LEN)", "progress = min(runtime.progress(), 1.0)",
                   "runtime.step(model, loss)", "runtime.finish(model)"):
        assert wanted in train, wanted
    for gone in ("from prepare", "TIME_BUDGET", "evaluate_bpb", "make_dataloader", "tokenizer", "synchronize", "break",
                 "autocast_ctx", "val_bpb"):
        assert gone not in train, gone


@pytest.mark.parametrize("shape", SHAPES)
def test_adopted_scripts_pass_the_variant_validator(shape):
    """search evolve validates its baseline: an adopted script must be a valid variant."""
    from mutations.validation import validate_source

    assert validate_source((FIXTURES / shape / "expected" / "train.py").read_text()).ok


def test_statements_adopt_does_not_touch_keep_their_bytes():
    original, adopted = adopt(FIXTURES / "autoresearch" / "train.py").files["train.py"]
    model_code = original[original.index("@dataclass"):original.index("# Hyperparameters")]
    assert model_code.replace("targets.view(-1)", "targets.reshape(-1)") in adopted


# -------------------------------------------------------------------- refusals
def _variant(tmp_path: Path, shape: str, old: str, new: str) -> Path:
    """A copy of the fixture with old replaced by new."""
    folder = tmp_path / shape
    shutil.copytree(FIXTURES / shape, folder, ignore=shutil.ignore_patterns("expected"))
    source = (folder / "train.py").read_text()
    assert source.count(old) == 1, old
    (folder / "train.py").write_text(source.replace(old, new))
    return folder / "train.py"


def _line(script: Path, text: str) -> int:
    return next(n for n, line in enumerate(script.read_text().splitlines(), 1) if text in line)


@pytest.mark.parametrize("shape, old, new, at, words", [
    ("autoresearch", "while True:\n", "for step in range(1000):\n", "for step in", "one top-level `while` training loop"),
    ("autoresearch", "        x, y, epoch = next(train_loader)  # the next batch, while the GPU works\n",
     "        x, y = my_batches.sample()\n", "while True", "takes no batch adopt recognises"),
    ("autoresearch", "import torch\n", "from kernels import get_kernel\nimport torch\n", "kernels", "GPU-only kernels"),
    ("autoresearch", "print(f\"depth:            {DEPTH}\")\n", "samples = generate(model, tokenizer)\n",
     "samples =", "after the training loop adopt cannot map"),
    ("autoresearch", "    lrm = get_lr_multiplier(progress)\n",
     "    lrm = get_lr_multiplier(progress) if total_training_time < TIME_BUDGET else 0.0\n", "lrm = ",
     "uses TIME_BUDGET: the runtime owns the budget"),
    ("autoresearch", "    step += 1\n",
     "    step += 1\n    if math.isnan(train_loss_f):\n        smooth_train_loss = 0\n        break\n",
     "break", "a `break` adopt cannot map"),
    ("nanogpt", "# linear warmup",
     "def val_loss():\n    vx, vy = get_batch('val')\n    return model(vx, vy)[1].item()\n\n# linear warmup",
     "get_batch('val')", "uses get_batch: get_batch read the data files"),
    ("autoresearch", "import math\n", "import math\nimport subprocess\n", "import subprocess",
     "would break a variant rule: `subprocess` spawns processes"),
    ("nanogpt", "    iter_num += 1\n", "    iter_num += 1\n    torch.save(model.state_dict(), 'last.pt')\n",
     "'last.pt'", "a checkpoint adopt cannot map"),
])
def test_what_adopt_cannot_convert_is_refused_with_its_line(tmp_path, shape, old, new, at, words):
    script = _variant(tmp_path, shape, old, new)
    with pytest.raises(AdoptError) as refused:
        adopt(script)
    message = str(refused.value)
    assert words in message and "\n" not in message
    assert f"train.py:{_line(script, at)}:" in message, message


def test_every_refusal_is_given_at_once(tmp_path):
    script = _variant(tmp_path, "autoresearch", "import torch\n", "from flash_attn import flash_attn_func\nimport torch\n")
    source = script.read_text() + "samples = generate(model, tokenizer)\n"
    script.write_text(source)
    with pytest.raises(AdoptError) as refused:
        adopt(script)
    assert [r.reason.split(" ")[0] for r in refused.value.refusals] == ["imports", "a"]


def test_a_gpu_kernel_in_a_local_module_is_refused_in_that_file(tmp_path):
    script = _variant(tmp_path, "nanogpt", "import math\n", "import math\n")
    model = script.parent / "model.py"
    model.write_text(model.read_text().replace("import torch\n", "import torch\nimport triton\n", 1))
    with pytest.raises(AdoptError, match=r"model\.py:\d+: imports triton"):
        adopt(script)


# -------------------------------------------------------------------- the command
def test_cli_prints_the_diff_and_writes_the_folder(tmp_path):
    out = tmp_path / "adopted"
    result = search("adopt", str(FIXTURES / "nanogpt" / "train.py"), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("diff --git a/train.py b/train.py\n")
    assert "\n-while True:\n" in result.stdout and "\n+while runtime.keep_training():\n" in result.stdout
    assert "diff --git a/model.py b/model.py" in result.stdout
    assert "configurator.py is not carried" in result.stderr and "runtime.step" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["model.py", "train.py"]
    assert (out / "train.py").read_text() == (FIXTURES / "nanogpt" / "expected" / "train.py").read_text()


def test_cli_refuses_a_non_empty_folder_without_force(tmp_path):
    out = tmp_path / "adopted"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = search("adopt", str(FIXTURES / "autoresearch" / "train.py"), "-o", str(out))
    assert result.returncode == 2 and "not an empty folder" in result.stderr and "--force" in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert search("adopt", str(FIXTURES / "autoresearch" / "train.py"), "-o", str(out), "--force").returncode == 0
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "train.py"]


def test_cli_refusal_is_one_line_and_writes_nothing(tmp_path):
    script = _variant(tmp_path, "autoresearch", "while True:\n", "for step in range(1000):\n")
    line = _line(script, "for step in")
    out = tmp_path / "adopted"
    result = search("adopt", str(script), "-o", str(out))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(f"Error: cannot adopt: train.py:{line}:") and result.stderr.count("\n") == 1
    assert not out.exists()


# -------------------------------------------------------------------- the adopted scripts train
def _trains(folder: Path) -> dict:
    result = search("run", str(folder / "train.py"), "--budget", "20k", "--device", "cpu", "--format", "json")
    assert result.stdout, result.stderr[-3000:]
    return json.loads(result.stdout)


def test_adopted_autoresearch_trains_under_search_run(tmp_path):
    assert search("adopt", str(FIXTURES / "autoresearch" / "train.py"), "-o", str(tmp_path)).returncode == 0
    data = _trains(tmp_path)
    assert data["status"] == "ok" and 0 < data["val_bpb"] < 8, data.get("message")


def test_adopted_nanogpt_trains_under_search_run_with_its_model_py(tmp_path):
    assert search("adopt", str(FIXTURES / "nanogpt" / "train.py"), "-o", str(tmp_path)).returncode == 0
    assert (tmp_path / "model.py").is_file() and not (tmp_path / "configurator.py").exists()
    data = _trains(tmp_path)
    assert data["status"] == "ok" and 0 < data["val_bpb"] < 8, data.get("message")


if __name__ == "__main__":
    regenerate()
