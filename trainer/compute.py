"""What a run's training cost, measured from outside it, against what its model says it should cost.

A token budget bounds data, not compute: a variant can take several optimizer steps per counted
batch (the red team's did, and gained 1.5 bits per byte at equal tokens). The runner measures
the CPU time of the training process tree from outside (its cgroup, or psutil; wall-clock
training seconds on a GPU), and the trusted scorer times the same model's forward pass on the
scoring calls. Training costs about 3 forward passes per token (forward and backward); a run that
spent more than the profile's `compute_limit` times that between its first batch and its model,
beyond a fixed allowance for the export and the probes and a little per batch, is over budget.
"""
from __future__ import annotations

from dataclasses import dataclass

from trainer.batch_server import TRAINING_FLOPS_PER_FORWARD

FIXED_ALLOWANCE_SECONDS = 1.0   # the export and the probes
BATCH_ALLOWANCE_SECONDS = 0.01  # per served batch: the optimizer, the protocol, Python


@dataclass(frozen=True)
class Compute:
    spent_seconds: float     # CPU seconds of the training tree (wall-clock training seconds on a GPU)
    expected_seconds: float  # 3 forward passes per trained token, as the scorer timed them
    flops: float             # 3 x forward FLOPs per token x tokens

    @property
    def ratio(self) -> float:
        return self.spent_seconds / self.expected_seconds if self.expected_seconds else 0.0

    def excess(self, limit: float, batches: int) -> str | None:
        """Why the run spent more than `limit` times the compute its model needs, or None."""
        allowed = limit * self.expected_seconds + FIXED_ALLOWANCE_SECONDS + BATCH_ALLOWANCE_SECONDS * batches
        if self.spent_seconds <= allowed:
            return None
        return (f"training took {self.spent_seconds:.1f}s of compute where its model needs about "
                f"{self.expected_seconds:.1f}s for the tokens it was given ({self.ratio:.1f}x; allowed {allowed:.1f}s): "
                "more work per batch than one optimizer step, which the budget does not buy")


def measure(spent_seconds: float, tokens: int, forward_seconds_per_token: float,
            forward_flops_per_token: float) -> Compute:
    per_token = TRAINING_FLOPS_PER_FORWARD * forward_seconds_per_token
    return Compute(spent_seconds, per_token * tokens, TRAINING_FLOPS_PER_FORWARD * forward_flops_per_token * tokens)
