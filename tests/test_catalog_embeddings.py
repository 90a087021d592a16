"""Catalog moves on embeddings and the output head: exact before/after edits per pattern form, refusals,
pairwise merges, and baseline runs through the runtime (whose finish() flags a causality leak).

Each expected result is the input with a few exact text replacements, so the whole output is checked.
"""
from __future__ import annotations

import importlib
import itertools
import textwrap

import pytest
import torch

from mutations.diff import structural_diff
from mutations.edits import apply_mutation
from mutations.merge import merge
from tests.conftest import edited, refused
from trainer.baselines import BASELINE
from trainer.result import Status
from trainer.runner import run_variant, smoke_spec

embeddings = importlib.import_module("mutations.catalog.embeddings")
NotApplicable = importlib.import_module("mutations.catalog._base").NotApplicable
MOVES = {move_class.name: move_class() for move_class in embeddings.MOVES}

# A compact baseline-shaped model: tied head, projections named proj, an init pass, a loop over blocks.
MODEL = textwrap.dedent('''
    import torch
    import torch.nn as nn

    WIDTH = 64


    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(WIDTH, 4 * WIDTH)
            self.proj = nn.Linear(4 * WIDTH, WIDTH)


    class GPT(nn.Module):
        def __init__(self, vocab_size):
            super().__init__()
            self.wte = nn.Embedding(vocab_size, WIDTH)
            self.blocks = nn.ModuleList(Block() for _ in range(2))
            self.lm_head = nn.Linear(WIDTH, vocab_size, bias=False)
            self.lm_head.weight = self.wte.weight  # tied
            self.apply(self._init_weights)

        def forward(self, idx):
            x = self.wte(idx)
            for block in self.blocks:
                x = block(x)
            return self.lm_head(x)
''').lstrip()
MODEL_INIT_END = "        self.apply(self._init_weights)\n"

# nanoGPT's shapes: `from torch import nn`, a ModuleDict, the tie written the other way round, a head on
# two branches, blocks called with an extra argument, and liger's fused loss built in a function.
NANO = textwrap.dedent('''
    import torch
    from torch import nn


    class CausalSelfAttention(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)
            self.c_proj = nn.Linear(config.n_embd, config.n_embd)


    class GPT(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.transformer = nn.ModuleDict(dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ))
            self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
            self.transformer.wte.weight = self.lm_head.weight  # weight tying

        def forward(self, idx, targets=None):
            pos = torch.arange(0, idx.size(1), dtype=torch.long, device=idx.device)
            tok_emb = self.transformer.wte(idx)
            x = self.transformer.drop(tok_emb + self.transformer.wpe(pos))
            for block in self.transformer.h:
                x = block(x, pos)
            if targets is not None:
                logits = self.lm_head(x)
            else:
                logits = self.lm_head(x[:, [-1], :])
            return logits


    def make_loss():
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

        return LigerFusedLinearCrossEntropyLoss(ignore_index=-1)
''').lstrip()
NANO_INIT_END = "        self.transformer.wte.weight = self.lm_head.weight  # weight tying\n"




def test_moves_are_named_described_and_ordered():
    assert list(MOVES) == ["untied_head", "zero_init_proj", "logit_softcap", "x0_shortcut", "smear", "bigram_embedding"]
    for move in MOVES.values():
        assert move.category in ("output", "init", "embedding") and move.description and "\n" not in move.description


# ---------------------------------------------------------------- untied_head
def test_untied_head_removes_the_tie_and_zeroes_the_head_after_the_init_pass():
    assert MOVES["untied_head"].apply(MODEL) == edited(
        MODEL, ("        self.lm_head.weight = self.wte.weight  # tied\n", ""),
        (MODEL_INIT_END, MODEL_INIT_END + "        nn.init.zeros_(self.lm_head.weight)  # untied head starts at zero "
                                          "(modded-nanogpt)\n"))


def test_untied_head_finds_the_head_on_either_side_of_the_tie():
    assert MOVES["untied_head"].apply(NANO) == edited(NANO, (
        NANO_INIT_END, "        nn.init.zeros_(self.lm_head.weight)  # untied head starts at zero (modded-nanogpt)\n"))


def test_untied_head_refusals():
    untied = edited(MODEL, ("        self.lm_head.weight = self.wte.weight  # tied\n", ""))
    assert refused("untied_head", untied) == ("no tied output head `self.<head>.weight = self.<embedding>.weight`: "
                                              "already untied, or never tied")


# ---------------------------------------------------------------- zero_init_proj
def test_zero_init_proj_zeroes_modules_named_proj_at_the_end_of_init():
    assert MOVES["zero_init_proj"].apply(MODEL) == edited(MODEL, (MODEL_INIT_END, MODEL_INIT_END + textwrap.indent(
        textwrap.dedent('''
            for name, layer in self.named_modules():  # residual projections start at zero: blocks start as the identity
                if name.endswith(".proj"):
                    nn.init.zeros_(layer.weight)
        ''').lstrip(), " " * 8)))


def test_zero_init_proj_takes_llama_names_and_spells_torch_nn_when_nn_is_not_imported():
    source = textwrap.dedent('''
        import torch


        class Attention(torch.nn.Module):
            def __init__(self, dim):
                super().__init__()
                self.o_proj = torch.nn.Linear(dim, dim, bias=False)
                self.q_proj = torch.nn.Linear(dim, dim, bias=False)


        class MLP(torch.nn.Module):
            def __init__(self, dim):
                super().__init__()
                self.down_proj = torch.nn.Linear(4 * dim, dim, bias=False)


        class Llama(torch.nn.Module):
            def __init__(self, vocab_size, dim):
                super().__init__()
                self.embed_tokens = torch.nn.Embedding(vocab_size, dim)
    ''').lstrip()
    assert MOVES["zero_init_proj"].apply(source) == source + textwrap.indent(textwrap.dedent('''
        for name, layer in self.named_modules():  # residual projections start at zero: blocks start as the identity
            if name.endswith((".down_proj", ".o_proj")):
                torch.nn.init.zeros_(layer.weight)
    ''').lstrip(), " " * 8)


def test_zero_init_proj_refusals():
    no_projection = edited(MODEL, ("self.proj = ", "self.fc2 = "))
    assert refused("zero_init_proj", no_projection).startswith("no residual output projection: no nn.Linear named c_proj")
    assert refused("zero_init_proj", "import torch\n") == "no class builds a token embedding nn.Embedding(vocab_size, dim)"


# ---------------------------------------------------------------- logit_softcap
SOFTCAP_CONSTANT = "LOGIT_SOFTCAP = 15.0  # tanh cap on the logits (Gemma 2: 30, modded-nanogpt: 15); knob: log[5, 60]\n"


def test_logit_softcap_wraps_a_returned_head_call():
    assert MOVES["logit_softcap"].apply(MODEL) == edited(
        MODEL, ("WIDTH = 64\n", "WIDTH = 64\n" + SOFTCAP_CONSTANT),
        ("return self.lm_head(x)", "return LOGIT_SOFTCAP * torch.tanh(self.lm_head(x) / LOGIT_SOFTCAP)"))


def test_logit_softcap_caps_every_assigned_logits_and_passes_the_cap_to_liger():
    cap = "            logits = LOGIT_SOFTCAP * torch.tanh(logits / LOGIT_SOFTCAP)  # soft-cap (Gemma 2)\n"
    assert MOVES["logit_softcap"].apply(NANO) == edited(
        NANO, ("from torch import nn\n", "from torch import nn\n" + SOFTCAP_CONSTANT),
        ("logits = self.lm_head(x)\n", "logits = self.lm_head(x)\n" + cap),
        ("logits = self.lm_head(x[:, [-1], :])\n", "logits = self.lm_head(x[:, [-1], :])\n" + cap),
        ("LigerFusedLinearCrossEntropyLoss(ignore_index=-1)",
         "LigerFusedLinearCrossEntropyLoss(ignore_index=-1, softcap=LOGIT_SOFTCAP)"))


def test_logit_softcap_refusals():
    assert refused("logit_softcap", edited(MODEL, ("vocab_size, bias", "WIDTH, bias"))) == \
        "no output head nn.Linear(dim, vocab_size)"
    assert refused("logit_softcap", edited(MODEL, ("return self.lm_head(x)", "return x @ self.lm_head.weight.T"))) == \
        "no `return self.<head>(...)` or `logits = self.<head>(...)` for the output head"


# ---------------------------------------------------------------- x0_shortcut
LAMBDAS = ("        self.resid_lambdas = nn.Parameter(torch.ones(len({0})))  # x0 shortcut: weight of the residual stream\n"
           "        self.x0_lambdas = nn.Parameter(torch.zeros(len({0})))  # and of the embedding output x0\n")


def test_x0_shortcut_mixes_the_embedding_into_every_block_input():
    assert MOVES["x0_shortcut"].apply(MODEL) == edited(
        MODEL, (MODEL_INIT_END, MODEL_INIT_END + LAMBDAS.format("self.blocks")),
        ("        for block in self.blocks:\n            x = block(x)\n",
         "        x0 = x  # mixed into every block's input\n        for i, block in enumerate(self.blocks):\n"
         "            x = block(self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0)\n"))


def test_x0_shortcut_keeps_extra_block_arguments_in_a_module_dict():
    assert MOVES["x0_shortcut"].apply(NANO) == edited(
        NANO, (NANO_INIT_END, NANO_INIT_END + LAMBDAS.format("self.transformer.h")),
        ("        for block in self.transformer.h:\n            x = block(x, pos)\n",
         "        x0 = x  # mixed into every block's input\n        for i, block in enumerate(self.transformer.h):\n"
         "            x = block(self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0, pos)\n"))


def test_x0_shortcut_refusals():
    sequential = edited(MODEL, ("        for block in self.blocks:\n            x = block(x)\n", "        x = self.blocks(x)\n"))
    assert refused("x0_shortcut", sequential) == "no `for block in self.<blocks>: x = block(x)` loop in GPT"


# ---------------------------------------------------------------- smear
GATE = "        self.smear_gate = nn.Parameter(torch.zeros(1))  # 0: the smear starts as the identity\n"


def test_smear_follows_the_embedding_statement():
    assert MOVES["smear"].apply(MODEL) == edited(
        MODEL, (MODEL_INIT_END, MODEL_INIT_END + GATE),
        ("        x = self.wte(idx)\n", "        x = self.wte(idx)\n        x = torch.cat([x[:, :1], x[:, 1:] + "
                                      "self.smear_gate * x[:, :-1]], dim=1)  # smear in the previous token\n"))


def test_smear_on_a_named_lookup_in_a_module_dict():
    assert MOVES["smear"].apply(NANO) == edited(
        NANO, (NANO_INIT_END, NANO_INIT_END + GATE),
        ("        tok_emb = self.transformer.wte(idx)\n",
         "        tok_emb = self.transformer.wte(idx)\n        tok_emb = torch.cat([tok_emb[:, :1], tok_emb[:, 1:] + "
         "self.smear_gate * tok_emb[:, :-1]], dim=1)  # smear in the previous token\n"))


def test_smear_imports_torch_when_only_torch_nn_is_imported():
    source = edited(MODEL, ("import torch\nimport torch.nn as nn\n", "import torch.nn as nn\n"))
    assert MOVES["smear"].apply(source).startswith("import torch.nn as nn\nimport torch\n\nWIDTH = 64\n")


def test_smear_refusals():
    inline = edited(MODEL, ("        x = self.wte(idx)\n        for", "        x = 0\n        for"),
                    ("return self.lm_head(x)", "return self.lm_head(self.wte(idx) + x)"))
    assert refused("smear", inline) == "GPT.forward does not assign the token embedding to a variable"
    assert refused("smear", "import torch\n") == "no class builds a token embedding nn.Embedding(vocab_size, dim)"


# ---------------------------------------------------------------- bigram_embedding
BUCKETS_CONSTANT = ("BIGRAM_BUCKETS = 4096  # hashed bigram table rows, the last for position 0; "
                    "knob: int[1024, 32768, log]\n")
BUCKETS_FUNCTION = '''

def bigram_buckets(idx):
    """Hashed (previous, current) token pair per position; position 0 has no previous token: last bucket."""
    pairs = torch.bitwise_xor(36313 * idx[:, 1:], 27191 * idx[:, :-1]) % (BIGRAM_BUCKETS - 1)
    return torch.cat([torch.full_like(idx[:, :1], BIGRAM_BUCKETS - 1), pairs], dim=1)
'''
TABLE = ("        self.bigram_embed = nn.Embedding(BIGRAM_BUCKETS, {})  # hashed token pairs\n"
         "        nn.init.zeros_(self.bigram_embed.weight)  # starts as the identity\n")


def test_bigram_embedding_adds_a_zeroed_table_after_the_embedding():
    changed = MOVES["bigram_embedding"].apply(MODEL)
    assert changed == edited(
        MODEL, ("WIDTH = 64\n", "WIDTH = 64\n" + BUCKETS_CONSTANT + BUCKETS_FUNCTION),
        (MODEL_INIT_END, MODEL_INIT_END + TABLE.format("WIDTH")),
        ("        x = self.wte(idx)\n",
         "        x = self.wte(idx)\n        x = x + self.bigram_embed(bigram_buckets(idx))  # hashed bigram\n"))


def test_bigram_embedding_takes_the_width_from_the_token_embedding():
    changed = MOVES["bigram_embedding"].apply(NANO)
    assert TABLE.format("config.n_embd") in changed
    assert "        tok_emb = tok_emb + self.bigram_embed(bigram_buckets(idx))  # hashed bigram\n" in changed


def test_bigram_buckets_are_causal_and_keep_a_bucket_for_position_zero():
    namespace: dict = {}
    exec(MOVES["bigram_embedding"].apply(MODEL), namespace)
    buckets, last = namespace["bigram_buckets"], namespace["BIGRAM_BUCKETS"] - 1
    idx = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(0))
    later_changed = idx.clone()
    later_changed[:, 17:] = (later_changed[:, 17:] + 1) % 256
    assert torch.equal(buckets(idx)[:, :17], buckets(later_changed)[:, :17])  # never reads idx[t + 1]
    assert (buckets(idx)[:, 0] == last).all() and (buckets(idx)[:, 1:] < last).all()
    pair = torch.tensor([[7, 9, 7, 9]])
    assert buckets(pair)[0, 1] == buckets(pair)[0, 3] != buckets(pair)[0, 2]  # a function of the pair


def test_bigram_embedding_refusals():
    assert refused("bigram_embedding", "import torch\n") == "no class builds a token embedding nn.Embedding(vocab_size, dim)"


# ---------------------------------------------------------------- combining
BASELINE_SOURCE = BASELINE.read_text()


def test_every_pair_of_these_moves_merges_on_the_baseline():
    mutations = {name: structural_diff(BASELINE_SOURCE, move.apply(BASELINE_SOURCE), name) for name, move in MOVES.items()}
    for a, b in itertools.combinations(MOVES, 2):
        merged = apply_mutation(BASELINE_SOURCE, merge(BASELINE_SOURCE, mutations[a], mutations[b]))
        compile(merged, f"{a}+{b}", "exec")
        for name in (a, b):
            assert "already" in refused(name, merged)


# ---------------------------------------------------------------- the baseline
# Two optimizer steps at the warmup's tiny learning rate barely move a zero-initialised gate or table, so
# the moves that could leak future tokens train for 8 steps: enough for finish()'s leak check to see one.
BUDGETS = {"smear": "16k", "bigram_embedding": "16k"}


@pytest.mark.parametrize("name", list(MOVES))
def test_each_move_applies_to_the_baseline_trains_causally_and_refuses_twice(name):
    source = MOVES[name].apply(BASELINE_SOURCE)
    with pytest.raises(NotApplicable, match="already"):
        MOVES[name].apply(source)
    assert source.count("runtime.") == BASELINE_SOURCE.count("runtime.")
    result = run_variant(source, smoke_spec(BUDGETS.get(name, "4096tok")), timeout_s=120)
    assert result.status is Status.OK, result.message + result.log_tail


def test_the_baseline_run_catches_a_smear_that_looks_ahead():
    causal = "torch.cat([x[:, :1], x[:, 1:] + self.smear_gate * x[:, :-1]], dim=1)"
    ahead = "torch.cat([x[:, :-1] + self.smear_gate * x[:, 1:], x[:, -1:]], dim=1)"
    source = edited(MOVES["smear"].apply(BASELINE_SOURCE), (causal, ahead), ("torch.zeros(1)", "torch.ones(1)"))
    result = run_variant(source, smoke_spec("4096tok"), timeout_s=120)
    assert result.status is Status.LEAK, result.message + result.log_tail
