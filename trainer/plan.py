"""What the scorer runs: scored rows, check rows and their perturbed twins, in calls of one shape.

The runner builds the plan from the validation (or test) split with a secret random generator;
the scorer runs the variant's model on every call and reports log-probabilities, never showing
any target to model code.

- Rows are non-overlapping windows of seq_len + 1 tokens, so no row's inputs hold another row's
  targets (with contiguous rows, the next row's first input was this row's last target).
- The first `scored` windows are scored. The next `check` windows are check rows: each appears
  once as it is and once as a twin whose tokens after a random cut come from another check row
  (real text, so a twin looks like any other row). Every position up to the cut must get the
  same log-probabilities in both: a model that looks ahead, or at other rows of its call, or
  whose output drifts between calls, fails. Check rows are never scored.
- Calls all have the same shape; scored and check rows are shuffled together, and the order of
  the calls is shuffled too. A short call is filled with copies of scored rows, compared whole.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainer.batches import windows

MIN_CHECK_ROWS = 4
_GENUINE, _TWIN, _COPY = 0, 1, 2  # what a slot of a call holds


@dataclass(frozen=True)
class ScoringPlan:
    inputs: np.ndarray    # (calls, rows, seq_len) int64: every call of the model, in order
    targets: np.ndarray   # (calls, rows, seq_len) int64: the target of each scored position, -1 elsewhere
    compare: np.ndarray   # (pairs, 5) int64: call, row, other call, other row, last position that must agree
    scored_rows: int
    check_rows: int

    @property
    def scored_tokens(self) -> int:
        return self.scored_rows * self.inputs.shape[2]


class PlanError(ValueError):
    """The split is too small for the plan asked of it."""


def check_rows_for(scored_rows: int, check_rows: int) -> int:
    """A quarter of the scored rows up to the profile's count, and never fewer than MIN_CHECK_ROWS."""
    return min(check_rows, max(MIN_CHECK_ROWS, scored_rows // 4))


def plan_sizes(split_tokens: int, seq_len: int, scored_tokens: int, check_rows: int, call_rows: int,
               ) -> tuple[int, int, int]:
    """(scored rows, check rows, rows per call) of the plan for a split of this many tokens."""
    scored = min(scored_tokens, split_tokens - 1) // seq_len
    check = check_rows_for(scored, check_rows)
    scored = min(scored, split_tokens // (seq_len + 1) - check)
    if scored < 1:
        raise PlanError(f"{min(scored_tokens, split_tokens - 1)} validation tokens (of {split_tokens} in the split) "
                        f"are fewer than one row of {seq_len} beside {check} check rows")
    return scored, check, min(call_rows, scored + check)


def scoring_plan(tokens: np.ndarray, seq_len: int, scored_tokens: int, check_rows: int, call_rows: int,
                 rng: np.random.Generator) -> ScoringPlan:
    scored, check, width = plan_sizes(len(tokens), seq_len, scored_tokens, check_rows, call_rows)
    rows = windows(tokens, seq_len, scored + check)
    twins, cuts = _twins(rows[scored:, :seq_len], rng)
    slots = np.concatenate([_calls(rng.permutation(scored + check), _GENUINE, width, scored, rng),
                            _calls(rng.permutation(check), _TWIN, width, scored, rng)])
    slots = slots[rng.permutation(len(slots))]   # (calls, width, 2): source row and kind of every slot
    source, kind = slots[..., 0], slots[..., 1]
    inputs = np.where((kind == _TWIN)[..., None], twins[np.where(kind == _TWIN, source, 0)], rows[source, :seq_len])
    targets = np.full(inputs.shape, -1, dtype=np.int64)
    home = {}  # genuine row -> (call, row) where it appears as itself
    for call, row in zip(*np.nonzero(kind == _GENUINE)):
        home[source[call, row]] = (call, row)
        if source[call, row] < scored:
            targets[call, row] = rows[source[call, row], 1:]
    compare = [(*home[source[c, r]], c, r, seq_len - 1) for c, r in zip(*np.nonzero(kind == _COPY))]
    compare += [(*home[scored + source[c, r]], c, r, cuts[source[c, r]]) for c, r in zip(*np.nonzero(kind == _TWIN))]
    return ScoringPlan(inputs, targets, np.asarray(compare, dtype=np.int64).reshape(-1, 5), scored, check)


def _twins(check: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Each check row with its tokens after a random cut replaced by another check row's; the cut
    can be the last position (an unchanged copy, which still tests that other rows do not count)."""
    count, seq_len = check.shape
    cuts = rng.integers(0, seq_len, count)
    twins = check.copy()
    for row, cut in enumerate(cuts):
        if cut == seq_len - 1:
            continue
        donors = [d for d in rng.permutation(count) if d != row and check[d, cut + 1] != check[row, cut + 1]]
        if donors:
            twins[row, cut + 1 :] = check[donors[0], cut + 1 :]
        else:  # every other row has the same next token: shift it, so the future does change
            twins[row, cut + 1 :] = check[row, cut + 1 :] + 1
    return twins, cuts


def _calls(sources: np.ndarray, kind: int, width: int, scored: int, rng: np.random.Generator) -> np.ndarray:
    """(calls, width, 2) slots of `kind`, the last call filled with copies of random scored rows."""
    missing = -len(sources) % width
    slots = np.stack([np.concatenate([sources, rng.integers(0, scored, missing)]),
                      np.concatenate([np.full(len(sources), kind), np.full(missing, _COPY)])], axis=-1)
    return slots.reshape(-1, width, 2)


_ARRAYS = ("inputs", "targets", "compare")


def plan_frame(plan: ScoringPlan) -> tuple[dict, bytes]:
    """The plan as the runner sends it to the scorer: shapes in the header, the int64 arrays in a row."""
    header = {"type": "plan", "scored_rows": plan.scored_rows, "check_rows": plan.check_rows}
    header.update({name: list(getattr(plan, name).shape) for name in _ARRAYS})
    return header, b"".join(np.ascontiguousarray(getattr(plan, name), dtype=np.int64).tobytes() for name in _ARRAYS)


def plan_from_frame(header: dict, data: bytes) -> ScoringPlan:
    arrays, offset = {}, 0
    for name in _ARRAYS:
        count = int(np.prod(header[name]))
        arrays[name] = np.frombuffer(data, dtype=np.int64, count=count, offset=offset).reshape(header[name])
        offset += count * 8
    return ScoringPlan(**arrays, scored_rows=header["scored_rows"], check_rows=header["check_rows"])
