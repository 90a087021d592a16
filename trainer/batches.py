"""Deterministic training batches: the same seed gives the same windows in the same order.

Windows are drawn in fixed chunks from a generator keyed by (seed, chunk), so the k-th
window does not depend on the batch size: two variants with different batch sizes still
see the same data sequence, which keeps paired comparisons paired.
"""
from __future__ import annotations

import numpy as np
import torch

_CHUNK = 1024


class TrainBatches:
    def __init__(self, tokens: np.ndarray, max_seq_len: int, seed: int, device: torch.device) -> None:
        if len(tokens) <= max_seq_len + 1:
            raise ValueError(f"training split has {len(tokens)} tokens, too few for rows of {max_seq_len}")
        self._tokens = tokens
        self._max_seq_len = max_seq_len
        self._seed = seed
        self._device = device
        self._next_window = 0
        self._chunk_index = -1
        self._chunk = np.empty(0, dtype=np.int64)

    def _offsets(self, count: int) -> np.ndarray:
        offsets = np.empty(count, dtype=np.int64)
        for i in range(count):
            chunk, index = divmod(self._next_window + i, _CHUNK)
            if chunk != self._chunk_index:
                rng = np.random.default_rng([self._seed, chunk])
                self._chunk = rng.integers(0, len(self._tokens) - self._max_seq_len - 1, _CHUNK)
                self._chunk_index = chunk
            offsets[i] = self._chunk[index]
        self._next_window += count
        return offsets

    def next(self, batch_size: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        offsets = self._offsets(batch_size)
        rows = np.asarray(self._tokens[offsets[:, None] + np.arange(seq_len + 1)], dtype=np.int64)
        window = torch.from_numpy(rows)
        if self._device.type == "cuda":
            window = window.pin_memory().to(self._device, non_blocking=True)
        return window[:, :-1], window[:, 1:]
