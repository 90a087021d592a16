"""The evaluation spec: everything the runner tells the trusted runtime inside the subprocess.

The runner fills every field (device profiles supply the defaults) and hands the spec to
the child on its standard input, so none of it sits in the variant's environment.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace

from trainer.budget import Budget


@dataclass(frozen=True)
class DeviceProfile:
    """Measurement settings that depend on the kind of device, not on the variant."""

    dtype: str              # autocast dtype offered to the script
    seq_len: int            # context length of the validation rows (and the longest training row)
    eval_tokens: int        # validation tokens scored by finish() (capped by the split's size)
    eval_batch_rows: int
    probe_rows: int         # rows of the small validation slice used by intermediate evaluations
    warmup_steps: int       # first steps left out of a wall-clock budget (compilation, allocator)


# CPU: a 0.85M-parameter GPT at T=128 trains at ~19k tokens/s on 2 cores, so 64k validation
# bytes cost about a second. CUDA: compile warm-up takes the first steps (autoresearch skips 10).
PROFILES = {
    "cpu": DeviceProfile("float32", seq_len=128, eval_tokens=1 << 16, eval_batch_rows=64, probe_rows=16, warmup_steps=1),
    "cuda": DeviceProfile("bfloat16", seq_len=2048, eval_tokens=1 << 21, eval_batch_rows=32, probe_rows=32, warmup_steps=10),
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
    channel_fd: int = -1            # where results go; -1 prints them (standalone `python train.py`)
    log_path: str = ""              # where the child's output goes once it has the spec; "" keeps its start-up log

    @classmethod
    def for_device(cls, device: str, **kwargs) -> RunSpec:
        kind = device.split(":")[0]
        return cls(device=device, profile=PROFILES[kind], **kwargs)

    def for_child(self, channel_fd: int, log_path: str = "") -> RunSpec:
        return replace(self, channel_fd=channel_fd, log_path=log_path)

    def to_json(self) -> str:
        data = asdict(self)
        data["budget"] = self.budget.to_dict()
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> RunSpec:
        data = json.loads(text)
        data["budget"] = Budget.from_dict(data["budget"])
        data["profile"] = DeviceProfile(**data["profile"])
        data["probes"] = tuple(data["probes"])
        return cls(**data)
