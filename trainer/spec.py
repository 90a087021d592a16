"""The evaluation spec: what one evaluation is (budget, seed, device, data, split), and the
measurement settings of each kind of device.

The runner keeps the spec; the sandboxed training process gets only what its runtime needs
(`session_config`): never the dataset's location, the split, or anything of the scoring plan.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from trainer.budget import Budget


@dataclass(frozen=True)
class DeviceProfile:
    """Measurement settings that depend on the kind of device, not on the variant."""

    dtype: str              # autocast dtype offered to the script
    seq_len: int            # context length of the validation rows (and the longest training row)
    eval_tokens: int        # validation tokens scored by finish() (capped by the split's size)
    eval_batch_rows: int
    probe_rows: int         # held-out training rows of the probes (intermediate evaluations)
    warmup_steps: int       # first steps left out of a wall-clock budget (compilation, allocator)
    check_rows: int = 64    # validation rows checked for causality beside the scored ones (trainer/plan.py)
    check_tolerance: float = 1e-3  # largest change of a log-probability the check accepts, in nats
    compute_limit: float = 1.5  # training compute allowed, in multiples of the model's forward+backward cost


# CPU: a 0.85M-parameter GPT at T=128 trains at ~19k tokens/s on 2 cores, and a call of 64 rows
# costs the scorer ~0.14 s: 40k scored tokens plus 64 check rows and their twins are 7 calls
# (scoring 1.0 s; 64k scored tokens took 1.2 s before, and the 3% target at 60 s needs the rest).
# The check's tolerance caps what a model could gain by looking ahead under it: 1e-3 nats per
# byte is 0.0014 bpb, under the seed noise (0.0055). CUDA: compile warm-up takes
# the first steps (autoresearch skips 10); bf16 logits move by ~1e-2 where a kernel's reduction
# order changes with the batch (not measured on a GPU here), hence the looser tolerance there.
# Compute limit on CPU (CPU seconds of training over 3x the scorer's forward CPU seconds per
# token, 40k tokens of the baseline and 7 catalog moves, 1 and 2 threads): honest 0.82-1.12,
# two optimizer steps per batch 1.65-1.86, four 3.25-3.35. On a GPU (wall seconds) unmeasured:
# compiled training beats an eager forward, but small steps are launch-bound, hence 2.5.
PROFILES = {
    "cpu": DeviceProfile("float32", seq_len=128, eval_tokens=5 << 13, eval_batch_rows=64, probe_rows=16,
                         warmup_steps=1, check_rows=64, check_tolerance=1e-3, compute_limit=1.5),
    "cuda": DeviceProfile("bfloat16", seq_len=2048, eval_tokens=1 << 21, eval_batch_rows=32, probe_rows=32,
                          warmup_steps=10, check_rows=32, check_tolerance=2e-2, compute_limit=2.5),
}

DEFAULT_PROBES = (0.25, 0.5, 0.75)


@dataclass(frozen=True)
class RunSpec:
    budget: Budget
    seed: int
    device: str                     # resolved: "cpu", "cuda", "cuda:1"
    dataset_root: str               # a prepared dataset folder (trainer.datasets)
    split: str = "val"              # the split finish() scores: "val" in search, "test" only at the end
    threads: int = 0                # CPU threads for torch; 0 keeps torch's default
    profile: DeviceProfile = field(default_factory=lambda: PROFILES["cpu"])
    probes: tuple[float, ...] = DEFAULT_PROBES

    @classmethod
    def for_device(cls, device: str, **kwargs) -> RunSpec:
        kind = device.split(":")[0]
        return cls(device=device, profile=PROFILES[kind], **kwargs)

    def session_config(self, vocab_size: int, token_bytes: list[int]) -> dict:
        """All the sandboxed runtime is told: its budget (to report progress), seed, device, shapes."""
        return {"budget": self.budget.to_dict(), "seed": self.seed, "device": self.device, "threads": self.threads,
                "dtype": self.profile.dtype, "seq_len": self.profile.seq_len, "vocab_size": vocab_size,
                "token_bytes": token_bytes, "export_rows": self.profile.eval_batch_rows}
