"""Training catalog moves: before/after snippets per pattern form, NotApplicable reasons, generated optimizer
helpers on real modules, and CPU smoke runs of the baseline with each move and of a nanoGPT-style script with
a stack of them."""
from __future__ import annotations

import importlib
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import libcst as cst
import pytest
import torch

training = importlib.import_module("mutations.catalog.training")
NotApplicable = training.NotApplicable
BASELINE = (Path(__file__).parents[1] / "trainer" / "baselines" / "train.py").read_text()
MOVES = {cls.name: cls() for cls in training.MOVES}

# A contract-following nanoGPT-style script: lower-case constants, ModuleDict, untied head, module-level
# AdamW with literal options, an absolute lr per step, no torch.compile and no autocast.
NANO = textwrap.dedent('''\
    import math

    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    from trainer import runtime

    n_layer = 2
    n_head = 2
    n_embd = 32
    batch_size = 8
    learning_rate = 3e-3
    dropout = 0.1


    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_attn = nn.Linear(n_embd, 3 * n_embd)
            self.c_proj = nn.Linear(n_embd, n_embd)
            self.attn_dropout = nn.Dropout(dropout)

        def forward(self, x):
            B, T, C = x.shape
            q, k, v = self.c_attn(x).split(C, dim=2)
            q, k, v = (t.view(B, T, n_head, C // n_head).transpose(1, 2) for t in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout if self.training else 0.0, is_causal=True)
            return x + self.attn_dropout(self.c_proj(y.transpose(1, 2).reshape(B, T, C)))


    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.transformer = nn.ModuleDict(dict(
                wte=nn.Embedding(runtime.vocab_size, n_embd),
                drop=nn.Dropout(dropout),
                h=nn.ModuleList(Block() for _ in range(n_layer)),
            ))
            self.lm_head = nn.Linear(n_embd, runtime.vocab_size, bias=False)

        def forward(self, idx):
            x = self.transformer.drop(self.transformer.wte(idx))
            for block in self.transformer.h:
                x = block(x)
            return self.lm_head(x)


    def get_lr(progress):
        if progress < 0.1:
            return learning_rate * (progress + 1e-3) / 0.1
        decay_ratio = (progress - 0.1) / 0.9
        coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))
        return learning_rate * (0.1 + 0.9 * coeff)


    model = GPT().to(runtime.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.1)
    while runtime.keep_training():
        lr = get_lr(runtime.progress())
        for param_group in optimizer.param_groups:
            param_group['lr'] = lr
        x, y = runtime.next_batch(batch_size)
        logits = model(x)
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        runtime.step(model, loss)
    runtime.finish(model)
''')
NANO_STACK = ["muon", "muon_momentum_warmup", "per_group_adam", "adam_eps", "weight_decay_off", "higher_lr",
              "wsd_schedule", "dropout_removal", "deeper", "wider", "more_heads", "bigger_batch", "torch_compile",
              "bf16_autocast"]


def apply(name: str, source: str) -> str:
    return MOVES[name].apply(source)


def changed_lines(before: str, after: str) -> tuple[list[str], list[str]]:
    """(removed, added) lines, in order."""
    old, new = before.splitlines(), after.splitlines()
    return [line for line in old if line not in new], [line for line in new if line not in old]


def reason(name: str, source: str) -> str:
    with pytest.raises(NotApplicable) as caught:
        apply(name, source)
    return str(caught.value)


def definitions(source: str, namespace: dict) -> dict:
    """Exec the module's top-level functions and plain classes (the generated helpers) into namespace."""
    module = cst.parse_module(source)
    for statement in module.body:
        if isinstance(statement, cst.FunctionDef) or isinstance(statement, cst.ClassDef) and not statement.bases:
            exec(module.code_for_node(statement), namespace)
    return namespace


class TiedLM(torch.nn.Module):
    def __init__(self, tied: bool = True) -> None:
        super().__init__()
        self.wte = torch.nn.Embedding(11, 8)
        self.fc = torch.nn.Linear(8, 8)
        self.ln = torch.nn.LayerNorm(8)
        self.lm_head = torch.nn.Linear(8, 11, bias=False)
        if tied:
            self.lm_head.weight = self.wte.weight

    def forward(self, idx):
        return self.lm_head(self.ln(self.fc(self.wte(idx))))


# ---------------------------------------------------------------- optimizer
def test_muon_on_the_baseline_wraps_the_adamw_and_scales_each_groups_own_lr():
    removed, added = changed_lines(BASELINE, apply("muon", BASELINE))
    assert removed == ['    return torch.optim.AdamW(groups, lr=LEARNING_RATE, betas=(BETA1, BETA2), eps=ADAM_EPS,',
                       '        group["lr"] = LEARNING_RATE * lr_multiplier(runtime.progress())']
    assert '    return MuonWithAdamW(model, groups, lr=LEARNING_RATE, betas=(BETA1, BETA2), eps=ADAM_EPS,' in added
    assert ('        group["lr"] = group.setdefault("initial_lr", group["lr"]) * '
            'lr_multiplier(runtime.progress())') in added
    assert "MUON_LR = 0.02  # Muon learning rate (modded-nanogpt); knob: log[3e-3, 1e-1]" in added
    assert any("weight_decay=WEIGHT_DECAY)" in line for line in added)


def test_muon_on_a_module_level_adamw_divides_an_absolute_lr_by_the_peak():
    removed, added = changed_lines(NANO, apply("muon", NANO))
    assert removed == ["optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.1)",
                       "        param_group['lr'] = lr"]
    assert "optimizer = MuonWithAdamW(model, model.parameters(), lr=learning_rate, weight_decay=0.1)" in added
    assert ('        param_group[\'lr\'] = param_group.setdefault("initial_lr", param_group["lr"]) * lr / '
            "learning_rate") in added
    assert any("weight_decay=0.0)" in line for line in added)  # no weight-decay constant: Muon gets none


def test_muon_optimizer_puts_only_hidden_matrices_under_muon_and_trains():
    namespace = definitions(apply("muon", BASELINE), {"torch": torch, "MUON_LR": 0.02, "MUON_MOMENTUM": 0.95,
                                                      "WEIGHT_DECAY": 0.1})
    for tied in (True, False):
        model = TiedLM(tied)
        optimizer = namespace["MuonWithAdamW"](model, model.parameters(), lr=1e-3)
        adamw, muon = optimizer.optimizers
        assert [p for g in muon.param_groups for p in g["params"]] == [model.fc.weight]
        assert sum(len(g["params"]) for g in adamw.param_groups) == len(list(model.parameters())) - 1
        before = model.fc.weight.detach().clone()
        model(torch.tensor([[1, 2, 3]])).sum().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        assert not torch.equal(before, model.fc.weight) and model.fc.weight.grad is None
        assert {g["lr"] for g in optimizer.param_groups} == {1e-3, 0.02}


def test_muon_needs_an_adamw_and_applies_once():
    assert reason("muon", "import torch\nopt = torch.optim.SGD(model.parameters(), lr=0.1)\n") == \
        "no torch.optim.AdamW(...) construction"
    assert reason("muon", apply("muon", BASELINE)) == "MUON_LR is already defined"


def test_muon_momentum_warmup_ramps_inside_the_lr_loop():
    source = apply("muon", BASELINE)
    removed, added = changed_lines(source, apply("muon_momentum_warmup", source))
    assert removed == []
    assert added[1:] == [
        '        if "momentum" in group:  # Muon\'s groups: momentum 0.85 -> MUON_MOMENTUM (modded-nanogpt)',
        "            ramp = min(runtime.progress() / MUON_WARMUP_FRACTION, 1.0)",
        '            group["momentum"] = 0.85 + (MUON_MOMENTUM - 0.85) * ramp']
    assert added[0].startswith("MUON_WARMUP_FRACTION = 0.15  #")


def test_muon_momentum_warmup_needs_muon_and_an_lr_loop():
    assert reason("muon_momentum_warmup", BASELINE) == "needs the muon move first: no MUON_MOMENTUM constant"
    no_schedule = "import torch\nMUON_MOMENTUM = 0.95\nopt = MuonWithAdamW(model, model.parameters())\n"
    assert reason("muon_momentum_warmup", no_schedule).startswith("no `for group in optimizer.param_groups")
    twice = apply("muon_momentum_warmup", apply("muon", BASELINE))
    assert reason("muon_momentum_warmup", twice) == "MUON_WARMUP_FRACTION is already defined"


def test_per_group_adam_tied_baseline_gets_only_an_embedding_lr():
    removed, added = changed_lines(BASELINE, apply("per_group_adam", BASELINE))
    assert removed[0] == '    return torch.optim.AdamW(groups, lr=LEARNING_RATE, betas=(BETA1, BETA2), eps=ADAM_EPS,'
    assert ('    return torch.optim.AdamW(per_role_groups(model, groups), lr=LEARNING_RATE, betas=(BETA1, BETA2), '
            'eps=ADAM_EPS,') in added
    assert any(line.startswith("EMBED_LR = 1e-2") for line in added)
    assert not any(line.startswith("HEAD_LR") for line in added)


def test_per_group_adam_splits_an_untied_head_and_composes_with_muon():
    source = apply("per_group_adam", NANO)
    assert "optimizer = torch.optim.AdamW(per_role_groups(model, model.parameters()), lr=learning_rate, " \
           "weight_decay=0.1)" in source
    namespace = definitions(source, {"torch": torch, "EMBED_LR": 1e-2, "HEAD_LR": 2e-3})
    model = TiedLM(tied=False)
    optimizer = torch.optim.AdamW(namespace["per_role_groups"](model, model.parameters()), lr=1e-3)
    lrs = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert (lrs[id(model.wte.weight)], lrs[id(model.lm_head.weight)], lrs[id(model.fc.weight)]) == (1e-2, 2e-3, 1e-3)
    both = apply("per_group_adam", apply("muon", NANO))  # the AdamW inside MuonWithAdamW gets the roles
    assert "torch.optim.AdamW(per_role_groups(model, [group for group in rest if group[\"params\"]]), " in both


def test_adam_eps_sets_the_constant_a_literal_or_adds_the_argument():
    assert changed_lines(BASELINE, apply("adam_eps", BASELINE)) == (
        ["ADAM_EPS = 1e-8                              # AdamW epsilon"],
        ["ADAM_EPS = 1e-10                              # AdamW epsilon"])
    literal = "opt = torch.optim.Adam(params, lr=1e-3, eps=1e-8)\n"
    assert apply("adam_eps", literal) == "opt = torch.optim.Adam(params, lr=1e-3, eps=1e-10)\n"
    assert apply("adam_eps", "opt = AdamW(params, lr=1e-3)\n") == "opt = AdamW(params, lr=1e-3, eps=1e-10)\n"
    assert reason("adam_eps", "opt = AdamW(params, **options)\n").startswith("no Adam/AdamW construction whose eps")
    assert reason("adam_eps", apply("adam_eps", BASELINE)) == "eps is already 1e-10 (ADAM_EPS)"


def test_weight_decay_off_sets_the_constant_or_the_argument():
    assert changed_lines(BASELINE, apply("weight_decay_off", BASELINE))[1] == [
        "WEIGHT_DECAY = 0.0                           # on matrices and embeddings, not on biases or norms"]
    assert apply("weight_decay_off", "opt = torch.optim.AdamW(p, weight_decay=0.1)\n") == \
        "opt = torch.optim.AdamW(p, weight_decay=0.0)\n"
    assert apply("weight_decay_off", "wd = 0.1\nopt = torch.optim.AdamW(p, weight_decay=wd)\n") == \
        "wd = 0.0\nopt = torch.optim.AdamW(p, weight_decay=wd)\n"
    assert reason("weight_decay_off", "x = 1\n") == "no Adam/AdamW construction whose weight_decay could be set to 0.0"
    assert reason("weight_decay_off", apply("weight_decay_off", BASELINE)) == \
        "weight_decay is already 0.0 (WEIGHT_DECAY)"


# ---------------------------------------------------------------- schedule
def test_wsd_replaces_the_half_cosine():
    removed, added = changed_lines(BASELINE, apply("wsd_schedule", BASELINE))
    assert removed == ["    cosine = 0.5 * (1 + math.cos(math.pi * min(decay, 1.0)))"]
    assert added[1] == "    cosine = min(1.0, (1 - min(decay, 1.0)) / WARMDOWN_FRACTION)"
    assert added[0].startswith("WARMDOWN_FRACTION = 0.4  #")
    assert changed_lines(NANO, apply("wsd_schedule", NANO))[1][1] == \
        "    coeff = min(1.0, (1 - decay_ratio) / WARMDOWN_FRACTION)"
    divided = "def get_lr(t):\n    return (1 + math.cos(math.pi * (t - a))) / 2\n"
    assert "    return min(1.0, (1 - (t - a)) / WARMDOWN_FRACTION)\n" in apply("wsd_schedule", divided)


def test_wsd_needs_a_cosine_lr_function_and_applies_once():
    linear = "def get_lr(t):\n    return 1 - t\n\n\ndef wave(t):\n    return 0.5 * (1 + math.cos(math.pi * t))\n"
    assert reason("wsd_schedule", linear) == \
        "no half-cosine 0.5 * (1 + math.cos(math.pi * t)) in an lr schedule function"
    assert reason("wsd_schedule", apply("wsd_schedule", BASELINE)).startswith("already warm-stable-decay")


def test_short_warmup_scales_a_fraction_or_a_step_count():
    assert changed_lines(BASELINE, apply("short_warmup", BASELINE))[1] == [
        "WARMUP_FRACTION = 0.02                        # linear warmup, as a fraction of the budget"
        "; short_warmup x0.2"]
    assert apply("short_warmup", "warmup_iters = 2000\n") == "warmup_iters = 400  # short_warmup x0.2\n"
    assert reason("short_warmup", "x = 1\n").startswith("no warmup constant (WARMUP_FRACTION")
    assert reason("short_warmup", apply("short_warmup", BASELINE)) == \
        "already short_warmup x0.2: the comment of WARMUP_FRACTION records it"


# ---------------------------------------------------------------- constants scaled by a factor
@pytest.mark.parametrize("name, before, after", [
    ("higher_lr", "LEARNING_RATE = 1e-3                         # AdamW peak learning rate",
     "LEARNING_RATE = 0.003                         # AdamW peak learning rate; higher_lr x3"),
    ("deeper", "DEPTH = runtime.pick(cpu=4, cuda=8)          # transformer blocks",
     "DEPTH = runtime.pick(cpu=6, cuda=12)          # transformer blocks; deeper x1.5"),
    ("wider", "WIDTH = runtime.pick(cpu=128, cuda=512)      # model dimension",
     "WIDTH = runtime.pick(cpu=192, cuda=768)      # model dimension; wider x1.5"),
    ("more_heads", "HEADS = runtime.pick(cpu=4, cuda=8)          # attention heads; must divide WIDTH",
     "HEADS = runtime.pick(cpu=8, cuda=16)          # attention heads; must divide WIDTH; more_heads x2"),
    ("bigger_batch", "BATCH_SIZE = runtime.pick(cpu=16, cuda=32)   # rows of runtime.seq_len tokens per optimizer step",
     "BATCH_SIZE = runtime.pick(cpu=32, cuda=64)   # rows of runtime.seq_len tokens per optimizer step"
     "; bigger_batch x2"),
    ("smaller_batch",
     "BATCH_SIZE = runtime.pick(cpu=16, cuda=32)   # rows of runtime.seq_len tokens per optimizer step",
     "BATCH_SIZE = runtime.pick(cpu=8, cuda=16)   # rows of runtime.seq_len tokens per optimizer step"
     "; smaller_batch x0.5"),
])
def test_scaling_moves_change_every_device_value_of_the_baseline(name, before, after):
    changed = apply(name, BASELINE)
    assert changed_lines(BASELINE, changed) == ([before], [after])
    assert reason(name, changed) == f"already {after.split('; ')[-1]}: the comment of {after.split()[0]} records it"


@pytest.mark.parametrize("name, before, after", [
    ("deeper", "n_layer = 3\n", "n_layer = 5  # deeper x1.5\n"),
    ("wider", "n_embd = 768\nn_head = 12\n", "n_embd = 1152  # wider x1.5\nn_head = 12\n"),
    ("wider", "N_EMBD = 100  # width\nN_HEAD = 2\n", "N_EMBD = 144  # width; wider x1.5\nN_HEAD = 2\n"),
    ("more_heads", "n_embd = 768\nn_head = 12\n", "n_embd = 768\nn_head = 24  # more_heads x2\n"),
    ("smaller_batch", "batch_size = 1\nDEVICE_BATCH_SIZE = 8\n", None),
])
def test_scaling_moves_on_nanogpt_names(name, before, after):
    if after is None:
        assert reason(name, before) == "smaller_batch leaves batch_size = 1 unchanged"
    else:
        assert apply(name, before) == after


def test_scaling_moves_say_why_they_do_not_apply():
    assert reason("deeper", "x = 1\n") == "no depth constant (DEPTH, N_LAYER, n_layer, N_LAYERS, n_layers)"
    assert reason("deeper", "DEPTH = int(os.environ['DEPTH'])\n") == "DEPTH is not a number literal"
    assert reason("more_heads", "WIDTH = 60\nHEADS = 4\n") == "8 heads do not divide the width 60"
    assert reason("wider", "WIDTH = 64\n").startswith("no heads constant")


# ---------------------------------------------------------------- regularization
def test_dropout_removal_on_the_baseline_drops_the_no_op_layers():
    removed, added = changed_lines(BASELINE, apply("dropout_removal", BASELINE))
    assert removed == [
        "        self.resid_dropout = nn.Dropout(DROPOUT)",
        "        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, "
        "dropout_p=DROPOUT if self.training else 0.0)",
        "        return self.resid_dropout(self.proj(y))",
        "        self.dropout = nn.Dropout(DROPOUT)",
        "        return self.dropout(self.proj(F.gelu(self.fc(x))))",
        "        self.drop = nn.Dropout(DROPOUT)",
        "        x = self.drop(self.wte(idx) + self.wpe(positions))"]
    assert added == ["        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)",
                     "        return self.proj(y)",
                     "        return self.proj(F.gelu(self.fc(x)))",
                     "        x = self.wte(idx) + self.wpe(positions)"]
    assert reason("dropout_removal", apply("dropout_removal", BASELINE)).startswith("no dropout to remove")


def test_dropout_removal_nanogpt_form_zeroes_the_constant_and_keeps_precedence():
    removed, added = changed_lines(NANO, apply("dropout_removal", NANO))
    assert "dropout = 0.0" in added and "            drop=nn.Dropout(dropout)," in removed
    assert "        x = self.transformer.wte(idx)" in added
    assert "        return x + self.c_proj(y.transpose(1, 2).reshape(B, T, C))" in added
    assert "        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)" in added
    snippet = "class A:\n    def __init__(self):\n        self.drop = nn.Dropout(0.1)\n\n" \
              "    def f(self, a, b):\n        return self.drop(a + b) * 2\n"
    assert apply("dropout_removal", snippet) == "class A:\n    def __init__(self):\n        pass\n\n" \
                                                "    def f(self, a, b):\n        return (a + b) * 2\n"


# ---------------------------------------------------------------- throughput
def test_fused_ce_flips_the_switch_or_says_it_is_missing():
    assert changed_lines(BASELINE, apply("fused_ce", BASELINE))[1] == [
        "FUSED_CE = True                             # liger-kernel fused linear cross-entropy (CUDA only)"]
    assert reason("fused_ce", NANO).startswith("no FUSED_CE switch found")
    assert reason("fused_ce", apply("fused_ce", BASELINE)) == "already FUSED_CE = True"


def test_torch_compile_compiles_the_training_forward_only():
    removed, added = changed_lines(NANO, apply("torch_compile", NANO))
    assert removed == ["    logits = model(x)"]
    assert added == ['compiled_model = torch.compile(model) if runtime.device.type == "cuda" else model  '
                     "# training only: evaluation shapes vary", "    logits = compiled_model(x)"]
    assert reason("torch_compile", BASELINE) == "already compiled: the script calls torch.compile"
    assert reason("torch_compile", NANO.replace("logits = model(x)", "logits = model.forward(x)")) == \
        "the training loop never calls model(...)"


def test_bf16_autocast_wraps_forward_and_loss():
    removed, added = changed_lines(NANO, apply("bf16_autocast", NANO))
    assert added == ["    with runtime.autocast():", "        logits = model(x)",
                     "        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())"]
    assert removed == ["    logits = model(x)", "    loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())"]
    assert reason("bf16_autocast", BASELINE) == "already autocasts: the script calls an autocast()"
    assert reason("bf16_autocast", NANO.replace("runtime.next_batch", "next_batch")) == \
        "no `loss = ...` after runtime.next_batch(...) in the training loop"


def test_moved_baselines_keep_readable_knobs():
    """The knob comments the moves write parse, and a scaling tag does not hide a `must divide` note."""
    from mutations.knobs import extract_knobs

    for name in ("muon", "per_group_adam", "wsd_schedule", "more_heads", "deeper"):
        knobs = {knob.name: knob for knob in extract_knobs(apply(name, BASELINE))}
        assert set(MOVES[name].knobs) <= set(knobs)
        assert knobs["HEADS"].divides == "WIDTH"
    muon = {knob.name: knob for knob in extract_knobs(apply("muon_momentum_warmup", apply("muon", BASELINE)))}
    assert {"MUON_LR", "MUON_MOMENTUM", "MUON_WARMUP_FRACTION"} <= set(muon)
    assert (muon["MUON_LR"].distribution.low, muon["MUON_LR"].distribution.high) == (3e-3, 1e-1)
    assert "HEAD_LR" in {knob.name for knob in extract_knobs(apply("per_group_adam", NANO))}


def test_moves_declare_their_contract():
    assert set(MOVES) >= {"muon", "per_group_adam", "wsd_schedule", "dropout_removal", "fused_ce", "bf16_autocast"}
    for move in MOVES.values():
        assert move.description and move.category
        assert move.cuda_only == (move.category == "throughput")
    assert not MOVES["torch_compile"].targets_baseline and not MOVES["bf16_autocast"].targets_baseline


# ---------------------------------------------------------------- smoke runs (2 optimizer steps on CPU)
def stacked(names: list[str], source: str) -> str:
    for name in names:
        source = apply(name, source)
    return source


# Moves that rewrite code run alone; the ones that only change constants share a run (the file must stay
# under two minutes on two shared cores). Every move is in at least one run (checked below).
SMOKE_STACKS = [["muon"], ["muon", "muon_momentum_warmup"], ["per_group_adam"], ["wsd_schedule"], ["dropout_removal"],
                ["higher_lr", "adam_eps", "weight_decay_off", "short_warmup", "bigger_batch", "fused_ce"],
                ["deeper", "wider", "more_heads", "smaller_batch"]]
SMOKE = {"+".join(names): (BASELINE, names) for names in SMOKE_STACKS}
SMOKE["nanogpt stack"] = (NANO, NANO_STACK)


def test_every_move_has_a_smoke_run():
    on_baseline = {name for names in SMOKE_STACKS for name in names}
    assert on_baseline | set(NANO_STACK) == set(MOVES)
    assert {name for name, move in MOVES.items() if move.targets_baseline} <= on_baseline


@pytest.fixture(scope="module")
def smoke_runs():
    from trainer.runner import run_variant, smoke_spec

    spec = smoke_spec("4096tok")

    def run(source: str, names: list[str]):
        return run_variant(stacked(names, source), spec, timeout_s=180)

    with ThreadPoolExecutor(max_workers=3) as pool:  # each run is mostly interpreter and torch start-up
        return {label: pool.submit(run, source, names) for label, (source, names) in SMOKE.items()}


@pytest.mark.parametrize("label", list(SMOKE))
def test_smoke_run_trains(label, smoke_runs):
    result = smoke_runs[label].result()
    assert result.status.value == "ok", result.message + result.log_tail
    assert result.steps >= 1  # 4096 tokens: 2 steps at the baseline batch, fewer or more when a move changes it
