"""Catalog moves on the blocks: exact before/after edits per pattern form, refusals, and baseline smoke runs.

Each expected result is the input with a few exact text replacements, so the whole output is checked.
"""
from __future__ import annotations

import importlib
import textwrap

import pytest

from tests.conftest import edited, refused
from trainer.baselines import BASELINE
from trainer.result import Status
from trainer import runner
from trainer.runner import run_variant

blocks = importlib.import_module("mutations.catalog.blocks")
NotApplicable = importlib.import_module("mutations.catalog._base").NotApplicable
MOVES = {move_class.name: move_class() for move_class in blocks.MOVES}

HEADER = "import torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n\nWIDTH = 64\n"

# A compact baseline-shaped model: learned positions, SDPA attention, a block, a loop over blocks.
MODEL = HEADER + textwrap.dedent('''

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = nn.Linear(WIDTH, 3 * WIDTH)

        def forward(self, x):
            q, k, v = heads(self.qkv(x))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return merge(y)


    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = Attention()

        def forward(self, x):
            x = x + self.attn(x)
            return x


    class GPT(nn.Module):
        def __init__(self, vocab_size, seq_len):
            super().__init__()
            self.wte = nn.Embedding(vocab_size, WIDTH)
            self.wpe = nn.Embedding(seq_len, WIDTH)
            self.blocks = nn.ModuleList(Block() for _ in range(2))

        def forward(self, idx):
            positions = torch.arange(idx.shape[1])
            x = self.wte(idx) + self.wpe(positions)
            for block in self.blocks:
                x = block(x)
            return x
''')

# nanoGPT's shapes: ModuleDict embeddings, named tok_emb/pos_emb, SDPA under `if self.flash`, nn.GELU module.
NANO = textwrap.dedent('''
    import torch
    import torch.nn as nn
    from torch.nn import functional as F


    class CausalSelfAttention(nn.Module):
        def forward(self, x):
            q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
            if self.flash:
                y = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=None, is_causal=True)
            else:
                y = manual(q, k, v)
            return self.c_proj(y)


    class MLP(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
            self.gelu = nn.GELU()
            self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)

        def forward(self, x):
            x = self.c_fc(x)
            x = self.gelu(x)
            x = self.c_proj(x)
            return x


    class Block(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.attn = CausalSelfAttention(config)

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            return x


    class GPT(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.transformer = nn.ModuleDict(dict(
                wte = nn.Embedding(config.vocab_size, config.n_embd),
                wpe = nn.Embedding(config.block_size, config.n_embd),
                h = nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ))

        def forward(self, idx, targets=None):
            b, t = idx.size()
            pos = torch.arange(0, t, dtype=torch.long, device=idx.device) # shape (t)
            tok_emb = self.transformer.wte(idx) # token embeddings of shape (b, t, n_embd)
            pos_emb = self.transformer.wpe(pos) # position embeddings of shape (t, n_embd)
            x = self.transformer.drop(tok_emb + pos_emb)
            for block in self.transformer.h:
                x = block(x)
            return self.lm_head(x)
''').lstrip()

ROTARY_LINE = "        q, k = apply_rotary(q), apply_rotary(k)\n"
QK_NORM_LINE = "        q, k = F.rms_norm(q, (q.size(-1),)), F.rms_norm(k, (k.size(-1),))\n"
SDPA_LINE = "        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)\n"




def test_moves_are_named_described_and_ordered():
    assert list(MOVES) == ["rmsnorm", "drop_linear_biases", "embed_norm", "relu2", "swiglu", "rope", "qk_norm",
                           "attn_temperature", "value_residual", "value_embeddings"]
    for move in MOVES.values():
        assert move.category in ("norm", "mlp", "attention") and move.description and "\n" not in move.description


# ---------------------------------------------------------------- norm
def test_rmsnorm_rewrites_modules_and_drops_their_bias_argument():
    source = HEADER + "a = nn.LayerNorm(WIDTH)\nb = torch.nn.LayerNorm(WIDTH, eps=1e-6, bias=False)\n"
    assert MOVES["rmsnorm"].apply(source) == edited(
        source, ("nn.LayerNorm(WIDTH)", "nn.RMSNorm(WIDTH)"),
        ("torch.nn.LayerNorm(WIDTH, eps=1e-6, bias=False)", "torch.nn.RMSNorm(WIDTH, eps=1e-6)"))


def test_rmsnorm_rewrites_functional_layer_norm_without_its_bias():
    source = HEADER + "y = F.layer_norm(x, w.shape, w, b, 1e-5)\nz = torch.nn.functional.layer_norm(x, (8,))\n"
    assert MOVES["rmsnorm"].apply(source) == edited(
        source, ("F.layer_norm(x, w.shape, w, b, 1e-5)", "F.rms_norm(x, w.shape, w, 1e-5)"),
        ("functional.layer_norm(x, (8,))", "functional.rms_norm(x, (8,))"))


def test_rmsnorm_refusals():
    assert refused("rmsnorm", HEADER + "a = nn.Linear(1, 2)\n") == "no nn.LayerNorm(...) or F.layer_norm(...) call"
    assert refused("rmsnorm", MOVES["rmsnorm"].apply(HEADER + "a = nn.LayerNorm(4)\n")).startswith("already")


def test_drop_linear_biases_leaves_explicit_biases_alone():
    source = HEADER + textwrap.dedent('''
        a = nn.Linear(WIDTH, WIDTH)
        b = nn.Linear(WIDTH, WIDTH, bias=True)
        c = nn.Linear(WIDTH, WIDTH, False)
        d = torch.nn.LayerNorm(WIDTH)
        e = nn.LayerNorm(WIDTH, 1e-5, True, False)
    ''')
    assert MOVES["drop_linear_biases"].apply(source) == edited(
        source, ("a = nn.Linear(WIDTH, WIDTH)", "a = nn.Linear(WIDTH, WIDTH, bias=False)"),
        ("torch.nn.LayerNorm(WIDTH)", "torch.nn.LayerNorm(WIDTH, bias=False)"))


def test_drop_linear_biases_refusals():
    assert "without a bias argument" in refused("drop_linear_biases", NANO)
    assert "already" in refused("drop_linear_biases", MOVES["drop_linear_biases"].apply(MODEL))


def test_embed_norm_after_the_embedding_sum():
    assert MOVES["embed_norm"].apply(MODEL) == edited(
        MODEL, ("+ self.wpe(positions)\n", "+ self.wpe(positions)\n        x = F.rms_norm(x, (x.size(-1),))\n"))


def test_embed_norm_after_a_named_lookup_in_a_module_dict():
    assert MOVES["embed_norm"].apply(NANO) == edited(NANO, (
        "(b, t, n_embd)\n", "(b, t, n_embd)\n        tok_emb = F.rms_norm(tok_emb, (tok_emb.size(-1),))\n"))


def test_embed_norm_refusals():
    assert refused("embed_norm", HEADER) == ("no token embedding nn.Embedding(vocab_size, d) "
                                             "created in a class's __init__")
    assert refused("embed_norm", MOVES["embed_norm"].apply(MODEL)) == "already normalises x after the embedding"


# ---------------------------------------------------------------- mlp
def test_relu2_rewrites_functional_gelu():
    source = HEADER + "a = F.gelu(self.fc(x), approximate='tanh')\nb = torch.nn.functional.gelu(x)\n"
    assert MOVES["relu2"].apply(source) == edited(
        source, ("F.gelu(self.fc(x), approximate='tanh')", "F.relu(self.fc(x)).square()"),
        ("functional.gelu(x)", "functional.relu(x).square()"))


def test_relu2_replaces_gelu_modules_with_a_helper_class():
    helper = ('\n\nclass ReLUSquared(torch.nn.Module):\n    """relu(x)^2 (Primer, So et al. 2021)."""\n\n'
              '    def forward(self, x):\n        return torch.relu(x).square()\n')
    assert MOVES["relu2"].apply(NANO) == edited(
        NANO, ("self.gelu = nn.GELU()", "self.gelu = ReLUSquared()"),
        ("import functional as F\n", "import functional as F\n" + helper))


def test_relu2_refusals():
    assert refused("relu2", MODEL) == "no F.gelu(...) call or nn.GELU() module"
    assert refused("relu2", MOVES["relu2"].apply(NANO)) == "already uses ReLU^2: no GELU left"


BASELINE_MLP = HEADER + textwrap.dedent('''

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(WIDTH, 4 * WIDTH)
            self.proj = nn.Linear(4 * WIDTH, WIDTH)

        def forward(self, x):
            return self.proj(F.gelu(self.fc(x)))
''')


def test_swiglu_on_a_nested_gelu_mlp():
    assert MOVES["swiglu"].apply(BASELINE_MLP) == edited(
        BASELINE_MLP, ("self.fc = nn.Linear(WIDTH, 4 * WIDTH)", "self.fc = nn.Linear(WIDTH, 2 * 4 * WIDTH)"),
        ("        return self.proj(F.gelu(self.fc(x)))",
         "        gate, up = self.fc(x).chunk(2, dim=-1)\n        return self.proj(F.silu(gate) * up)"))


def test_swiglu_follows_a_name_to_the_up_projection_and_parenthesises_sums():
    assert MOVES["swiglu"].apply(NANO) == edited(
        NANO, ("4 * config.n_embd, bias", "2 * 4 * config.n_embd, bias"),
        ("        x = self.gelu(x)\n", "        gate, up = x.chunk(2, dim=-1)\n        x = F.silu(gate) * up\n"))
    summed = BASELINE_MLP.replace("nn.Linear(WIDTH, 4 * WIDTH)", "nn.Linear(WIDTH, out_features=WIDTH + 8)")
    assert "out_features=2 * (WIDTH + 8)" in MOVES["swiglu"].apply(summed)


def test_swiglu_refusals():
    not_from_linear = BASELINE_MLP.replace("F.gelu(self.fc(x))", "self.fc(F.gelu(x))")
    assert refused("swiglu", not_from_linear) == "no MLP class whose forward applies GELU to an nn.Linear's output"
    assert refused("swiglu", MOVES["swiglu"].apply(BASELINE_MLP)) == "already gated: the MLP uses SiLU"


# ---------------------------------------------------------------- attention
def test_rope_replaces_learned_positions():
    changed = MOVES["rope"].apply(MODEL)
    assert changed.startswith(HEADER + "ROPE_BASE = 10000  # rotary frequency base (Su et al. 2021); knob: ")
    assert "\n\ndef apply_rotary(x):\n" in changed
    model_part = changed[changed.index("\n\nclass Attention"):]
    assert model_part == edited(
        MODEL[len(HEADER):], (SDPA_LINE, ROTARY_LINE + SDPA_LINE),
        ("        self.wpe = nn.Embedding(seq_len, WIDTH)\n", ""),
        ("        positions = torch.arange(idx.shape[1])\n", ""),
        ("x = self.wte(idx) + self.wpe(positions)", "x = self.wte(idx)"))


def test_rope_in_a_module_dict_with_named_position_embeddings():
    changed = MOVES["rope"].apply(NANO)
    assert changed[changed.index("\n\nclass CausalSelfAttention"):] == edited(
        NANO[NANO.index("\n\nclass CausalSelfAttention"):],
        ("            y = torch", "            q, k = apply_rotary(q), apply_rotary(k)\n            y = torch"),
        ("            wpe = nn.Embedding(config.block_size, config.n_embd),\n", ""),
        ("        pos = torch.arange(0, t, dtype=torch.long, device=idx.device) # shape (t)\n", ""),
        ("        pos_emb = self.transformer.wpe(pos) # position embeddings of shape (t, n_embd)\n", ""),
        ("drop(tok_emb + pos_emb)", "drop(tok_emb)"))


def test_apply_rotary_rotates_relative_positions():
    import torch

    namespace = {"torch": torch, "ROPE_BASE": 10000}
    exec(blocks._APPLY_ROTARY, namespace)
    q, k = torch.randn(1, 1, 1, 8).expand(1, 1, 6, 8), torch.randn(1, 1, 1, 8).expand(1, 1, 6, 8)
    scores = namespace["apply_rotary"](q) @ namespace["apply_rotary"](k).transpose(-1, -2)
    assert torch.allclose(scores[0, 0, 1, 0], scores[0, 0, 5, 4], atol=1e-5)  # depends on the offset only
    assert not torch.allclose(scores[0, 0, 1, 0], scores[0, 0, 2, 0])


def test_rope_refusals():
    no_positions = MODEL.replace("        self.wpe = nn.Embedding(seq_len, WIDTH)\n", "")
    assert refused("rope", no_positions) == ("no learned position embedding nn.Embedding(seq_len, d) "
                                             "created in a class's __init__")
    no_names = MODEL.replace("attention(q, k, v,", "attention(q.float(), k, v,")
    assert refused("rope", no_names).startswith("no F.scaled_dot_product_attention(q, k, v, ...) call")
    counted = MODEL + "\n    def size(self):\n        return self.wpe.weight.numel()\n"
    assert refused("rope", counted) == ("self.wpe is used beyond one lookup (in forward, size): "
                                        "remove those uses first")
    assert refused("rope", MOVES["rope"].apply(MODEL)) == "already rotary: apply_rotary is defined"


def test_qk_norm_goes_before_the_rotary_line_in_either_order():
    assert MOVES["qk_norm"].apply(MODEL) == edited(MODEL, (SDPA_LINE, QK_NORM_LINE + SDPA_LINE))
    rope, qk_norm = MOVES["rope"], MOVES["qk_norm"]
    both = qk_norm.apply(rope.apply(MODEL))
    assert QK_NORM_LINE + ROTARY_LINE + SDPA_LINE in both
    assert both == rope.apply(qk_norm.apply(MODEL))


def test_qk_norm_uses_the_files_functional_alias():
    source = MODEL.replace("import torch.nn.functional as F", "import torch.nn.functional as fn")
    assert "q, k = fn.rms_norm(q, (q.size(-1),)), fn.rms_norm(k" in MOVES["qk_norm"].apply(source)


def test_qk_norm_refusals():
    assert refused("qk_norm", HEADER) == ("no F.scaled_dot_product_attention(q, k, v, ...) call "
                                          "on plain names inside a class")
    assert refused("qk_norm", MOVES["qk_norm"].apply(MODEL)) == "already normalises q and k"


def test_attn_temperature_needs_qk_norm_and_sets_a_scale():
    assert refused("attn_temperature", MODEL) == "needs qk_norm first: no rms_norm of q and k before attention"
    normed = MOVES["qk_norm"].apply(MODEL)
    assert MOVES["attn_temperature"].apply(normed) == edited(
        normed, ("WIDTH = 64\n", "WIDTH = 64\nATTN_SCALE = 15.0  # attention logit of aligned unit-RMS q, k; "
                                 "scale = ATTN_SCALE / head_dim; knob: log[3, 60]\n"),
        ("is_causal=True)", "is_causal=True, scale=ATTN_SCALE / q.size(-1))"))


def test_attn_temperature_refuses_a_set_scale():
    normed = MOVES["qk_norm"].apply(MODEL)
    assert refused("attn_temperature", MOVES["attn_temperature"].apply(normed)) == "already sets the attention scale"


def test_value_residual_threads_the_first_values():
    assert MOVES["value_residual"].apply(MODEL) == edited(
        MODEL,
        ("3 * WIDTH)\n", "3 * WIDTH)\n        self.value_mix = torch.nn.Parameter(torch.tensor(0.5))\n"),
        ("    def forward(self, x):\n        q", "    def forward(self, x, v1=None):\n        q"),
        (SDPA_LINE, "        if v1 is None:\n            v1 = v\n        v = self.value_mix * v + (1 - self.value_mix)"
                    " * v1  # value residual (Zhou et al. 2024)\n" + SDPA_LINE),
        ("return merge(y)", "return merge(y), v1"),
        ("    def forward(self, x):\n        x = x + self.attn(x)\n        return x\n",
         "    def forward(self, x, v1=None):\n        attn_out, v1 = self.attn(x, v1=v1)\n        x = x + attn_out\n"
         "        return x, v1\n"),
        ("        for block in self.blocks:\n            x = block(x)\n",
         "        v1 = None\n        for block in self.blocks:\n            x, v1 = block(x, v1=v1)\n"))


def test_value_residual_names_the_missing_pattern():
    no_block = MODEL.replace("self.attn = Attention()", "self.attn = None")
    assert refused("value_residual", no_block).startswith("no block class that creates `self.<attr> = Attention(...)`")
    no_loop = MODEL.replace("x = block(x)", "x = block(x) + x")
    assert refused("value_residual", no_loop) == "no loop `for block in self.<blocks>: x = block(x)` in a class method"
    assert refused("value_residual", HEADER).startswith("no F.scaled_dot_product_attention")
    assert refused("value_residual", MOVES["value_residual"].apply(MODEL)) == (
        "already has a value residual: attention takes v1")


def test_value_embeddings_add_token_tables_to_the_values():
    assert MOVES["value_embeddings"].apply(MODEL) == edited(
        MODEL,
        ("WIDTH = 64\n", "WIDTH = 64\nVALUE_EMBED_LAYERS = 2  # value embedding tables, each used by one of the first "
                         "and one of the last layers; knob: int[1, 4]\n"),
        ("    def forward(self, x):\n        q", "    def forward(self, x, ve=None):\n        q"),
        (SDPA_LINE, "        if ve is not None:  # value embeddings (modded-nanogpt)\n"
                    "            v = v + ve.unflatten(-1, (v.size(1), v.size(-1))).transpose(1, 2)\n" + SDPA_LINE),
        ("    def forward(self, x):\n        x = x + self.attn(x)\n",
         "    def forward(self, x, ve=None):\n        x = x + self.attn(x, ve=ve)\n"),
        ("WIDTH)\n        self.wpe",
         "WIDTH)\n        self.value_embeds = nn.ModuleList(nn.Embedding(vocab_size, WIDTH) "
         "for _ in range(VALUE_EMBED_LAYERS))\n        self.wpe"),
        ("        for block in self.blocks:\n            x = block(x)\n",
         "        value_embeds = [table(idx) for table in self.value_embeds]\n"
         "        value_embeds = value_embeds + [None] * (len(self.blocks) - 2 * len(value_embeds)) + value_embeds\n"
         "        for block, ve in zip(self.blocks, value_embeds):\n            x = block(x, ve=ve)\n"))


def test_value_embeddings_refusals():
    assert refused("value_embeddings", HEADER).startswith("no F.scaled_dot_product_attention")
    embed = "    def embed(self, idx):\n        return self.wte(idx)\n\n"
    moved_loop = MODEL.replace("x = self.wte(idx)", "x = self.embed(idx)").replace(
        "    def forward(self, idx):", embed + "    def forward(self, idx):")
    assert refused("value_embeddings", moved_loop) == (
        "the loop over blocks is not in GPT.embed, where the tokens are embedded")
    assert refused("value_embeddings", MOVES["value_embeddings"].apply(MODEL)) == (
        "already has value embeddings: self.value_embeds exists")


# ---------------------------------------------------------------- the baseline
BASELINE_SOURCE = BASELINE.read_text()
PREREQUISITES = {"attn_temperature": ["rope", "qk_norm"]}  # attn_temperature needs qk_norm; rope joins its run


def stacked(names: list[str]) -> str:
    source = BASELINE_SOURCE
    for name in names:
        source = MOVES[name].apply(source)
    return source


@pytest.fixture(scope="module")
def smoke_spec():
    return runner.smoke_spec("4096tok")  # two optimizer steps of the CPU baseline


def assert_trains(source: str, spec) -> None:
    result = run_variant(source, spec, timeout_s=120)
    assert result.status is Status.OK, result.message + result.log_tail
    assert result.steps == 2


@pytest.mark.parametrize("name", list(MOVES))
def test_each_move_applies_to_the_baseline_trains_and_refuses_twice(name, smoke_spec):
    source = stacked([*PREREQUISITES.get(name, []), name])
    with pytest.raises(NotApplicable, match="already"):
        MOVES[name].apply(source)
    assert source.count("runtime.") == BASELINE_SOURCE.count("runtime.")
    assert_trains(source, smoke_spec)
