"""The built-in baseline: a deliberately plain, 2019-style GPT.

Learned position embeddings, LayerNorm with biases, a GELU MLP, dropout layers, tied input and
output embeddings, AdamW with warmup and a cosine decay scaled to the budget. Plain on
purpose: the search's job is to rediscover the modern recipe (RMSNorm, RoPE, QK-norm,
ReLU^2, Muon, warmdown, softcap, ...), one measured change at a time.

The same file trains on 2 CPU cores (sized by the `cpu=` values) and on a CUDA GPU
(`cuda=` values, bf16 autocast, torch.compile, optionally liger-kernel's fused linear
cross-entropy). The runtime owns the data, the budget and the score.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from trainer import runtime

# ---------------------------------------------------------------- hyperparameters
DEPTH = runtime.pick(cpu=4, cuda=8)          # transformer blocks
WIDTH = runtime.pick(cpu=128, cuda=512)      # model dimension
HEADS = runtime.pick(cpu=4, cuda=8)          # attention heads; must divide WIDTH
MLP_RATIO = 4                                # MLP hidden width / WIDTH (GPT-2)
DROPOUT = 0.0                                # GPT-2 used 0.1: it costs 40% of CPU speed and short runs do not overfit
BATCH_SIZE = runtime.pick(cpu=16, cuda=32)   # rows of runtime.seq_len tokens per optimizer step
LEARNING_RATE = 1e-3                         # AdamW peak learning rate
BETA1 = 0.9                                  # AdamW first-moment decay
BETA2 = 0.95                                 # AdamW second-moment decay
ADAM_EPS = 1e-8                              # AdamW epsilon
WEIGHT_DECAY = 0.1                           # on matrices and embeddings, not on biases or norms
WARMUP_FRACTION = 0.1                        # linear warmup, as a fraction of the budget
FINAL_LR_FRACTION = 0.1                      # cosine decays to this fraction of the peak
GRAD_CLIP = 1.0                              # max global gradient norm; 0 turns clipping off
INIT_STD = 0.02                              # normal init of weights (GPT-2)
COMPILE = True                               # torch.compile the model (CUDA only)
FUSED_CE = False                             # liger-kernel fused linear cross-entropy (CUDA only)


# ---------------------------------------------------------------- model
class CausalSelfAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(WIDTH, 3 * WIDTH)
        self.proj = nn.Linear(WIDTH, WIDTH)
        self.resid_dropout = nn.Dropout(DROPOUT)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, HEADS, C // HEADS).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=DROPOUT if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.proj(y))


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(WIDTH, MLP_RATIO * WIDTH)
        self.proj = nn.Linear(MLP_RATIO * WIDTH, WIDTH)
        self.dropout = nn.Dropout(DROPOUT)

    def forward(self, x):
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(WIDTH)
        self.attn = CausalSelfAttention()
        self.ln_2 = nn.LayerNorm(WIDTH)
        self.mlp = MLP()

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    def __init__(self, vocab_size: int, seq_len: int) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab_size, WIDTH)
        self.wpe = nn.Embedding(seq_len, WIDTH)
        self.drop = nn.Dropout(DROPOUT)
        self.blocks = nn.ModuleList(Block() for _ in range(DEPTH))
        self.ln_f = nn.LayerNorm(WIDTH)
        self.lm_head = nn.Linear(WIDTH, vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied embeddings
        self.apply(self._init_weights)
        for name, param in self.named_parameters():
            if name.endswith("proj.weight"):  # GPT-2: scale residual projections by depth
                nn.init.normal_(param, mean=0.0, std=INIT_STD / math.sqrt(2 * DEPTH))

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def hidden(self, idx):
        positions = torch.arange(idx.shape[1], device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(positions))
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x)

    def forward(self, idx):
        return self.lm_head(self.hidden(idx))


# ---------------------------------------------------------------- optimizer and schedule
def make_optimizer(model):
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=LEARNING_RATE, betas=(BETA1, BETA2), eps=ADAM_EPS,
                             fused=runtime.device.type == "cuda")


def lr_multiplier(progress):
    if progress < WARMUP_FRACTION:
        return (progress + 1e-3) / WARMUP_FRACTION
    decay = (progress - WARMUP_FRACTION) / (1 - WARMUP_FRACTION)
    cosine = 0.5 * (1 + math.cos(math.pi * min(decay, 1.0)))
    return FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * cosine


# ---------------------------------------------------------------- loss
def make_loss(model):
    """Next-token cross-entropy; on CUDA compiled over model and loss, or with liger's fused loss."""
    compile_it = COMPILE and runtime.device.type == "cuda"
    if FUSED_CE and runtime.device.type == "cuda":
        # liger's fused linear cross-entropy fails inside torch.compile on torch 2.11, so it stays
        # outside the compiled trunk; it never materialises the full logits.
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

        fused = LigerFusedLinearCrossEntropyLoss()
        trunk = torch.compile(model.hidden) if compile_it else model.hidden
        return lambda x, y: fused(model.lm_head.weight, trunk(x).flatten(0, 1), y.flatten())

    def loss(x, y):
        return F.cross_entropy(model(x).float().flatten(0, 1), y.flatten())

    return torch.compile(loss) if compile_it else loss


# ---------------------------------------------------------------- training
model = GPT(runtime.vocab_size, runtime.seq_len).to(runtime.device)
optimizer = make_optimizer(model)
loss_fn = make_loss(model)

while runtime.keep_training():
    for group in optimizer.param_groups:
        group["lr"] = LEARNING_RATE * lr_multiplier(runtime.progress())
    x, y = runtime.next_batch(BATCH_SIZE)
    with runtime.autocast():
        loss = loss_fn(x, y)
    loss.backward()
    if GRAD_CLIP:
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    runtime.step(model, loss)

runtime.finish(model)
