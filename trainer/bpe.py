"""Byte-level BPE (HuggingFace `tokenizers`) for prepared datasets.

Only `trainer.datasets.prepare` imports this module: training subprocesses read the
token files and `meta.json`, never the tokenizer.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

BOS = "<|bos|>"
SAMPLE_CHARS = 100_000_000  # BPE learns from at most about this much train text


def train(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Train a byte-level BPE with `BOS` as its only special token (id 0)."""
    tok = Tokenizer(models.BPE())
    # No normalizer and no prefix space: token bytes must add up to the text's bytes.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS],
        # all 256 byte symbols, so any text encodes, including bytes the sample lacks
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_capped(texts, SAMPLE_CHARS), trainer=trainer)
    return tok


def token_bytes(tok: Tokenizer, vocab_size: int) -> list[int]:
    """UTF-8 bytes each id stands for; 0 for BOS and for ids a small corpus left unused."""
    out = [0] * vocab_size
    for token, i in tok.get_vocab().items():
        # a byte-level token spells each of its bytes as one character
        out[i] = 0 if token == BOS else len(token)
    return out


def encode(tok: Tokenizer, texts: list[str]) -> list[np.ndarray]:
    return [np.asarray(e.ids, dtype=np.uint16) for e in tok.encode_batch(texts, add_special_tokens=False)]


def _capped(texts: Iterable[str], max_chars: int) -> Iterator[str]:
    total = 0
    for text in texts:
        if total >= max_chars:
            return
        yield text
        total += len(text)
