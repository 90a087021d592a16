"""Training data as the runner serves it: deterministic windows for a seed, and held-out probe rows.

Windows are drawn in fixed chunks from a generator keyed by (seed, chunk), so the k-th window
does not depend on the batch size: two variants with different batch sizes still see the same
data sequence, which keeps paired comparisons paired. The runner, outside the sandbox, draws them
and counts their tokens; the variant only receives them.

The last rows of the training split are held out for the probes (the small evaluations at 25%,
50% and 75% of the budget): they are never served as training windows, and no probe shows the
variant a validation byte (a model can remember what it is shown, DESIGN.md).
"""
from __future__ import annotations

import numpy as np

_CHUNK = 1024


def windows(tokens: np.ndarray, seq_len: int, count: int, start: int = 0) -> np.ndarray:
    """`count` non-overlapping rows of seq_len + 1 tokens (inputs and targets) from `start`."""
    return np.asarray(tokens[start : start + count * (seq_len + 1)], dtype=np.int64).reshape(count, seq_len + 1)


def probe_rows(tokens: np.ndarray, seq_len: int, rows: int) -> np.ndarray:
    """The held-out probe rows: the last `rows` windows of the training split."""
    return windows(tokens, seq_len, rows, start=len(tokens) - rows * (seq_len + 1))


class TrainBatches:
    """Windows of the training split outside its held-out tail, in a fixed order for the seed."""

    def __init__(self, tokens: np.ndarray, max_seq_len: int, seed: int, held_out: int = 0) -> None:
        usable = len(tokens) - held_out
        if usable <= max_seq_len + 1:
            raise ValueError(f"training split has {usable} usable tokens, too few for rows of {max_seq_len}")
        self._tokens = tokens
        self._last_start = usable - max_seq_len - 1
        self._seed = seed
        self._next_window = 0
        self._chunk_index = -1
        self._chunk = np.empty(0, dtype=np.int64)

    def _offsets(self, count: int) -> np.ndarray:
        offsets = np.empty(count, dtype=np.int64)
        for i in range(count):
            chunk, index = divmod(self._next_window + i, _CHUNK)
            if chunk != self._chunk_index:
                rng = np.random.default_rng([self._seed, chunk])
                self._chunk = rng.integers(0, self._last_start, _CHUNK)
                self._chunk_index = chunk
            offsets[i] = self._chunk[index]
        self._next_window += count
        return offsets

    def next(self, batch_size: int, seq_len: int) -> np.ndarray:
        """(batch_size, seq_len + 1) tokens in the split's own dtype: inputs [:, :-1], targets [:, 1:]."""
        offsets = self._offsets(batch_size)
        return np.asarray(self._tokens[offsets[:, None] + np.arange(seq_len + 1)])
