"""Throughput of the baseline and the catalog's modern stack on a GPU: tokens/s, MFU, peak memory.

    python benchmarks/gpu_throughput.py                      # about 7 minutes on one H100/H200

Every configuration is one real evaluation through the sandboxed runner at the CUDA size
(8 x 512, context 2048, bf16 autocast), so the numbers include what a search pays:

- `baseline` twice at 30 s (the first with a cold compile cache, the second warm) and once
  at 60 s: the runner's overhead (wall minus training time: start-up, compilation, probes,
  validation) as a fraction of the budget;
- `baseline+liger` (FUSED_CE=True), `baseline-eager` (COMPILE=False), `modern` (RMSNorm,
  no biases, RoPE, QK-norm, ReLU^2, logit softcap, zero-init projections, Muon, WSD,
  applied in that order) and `modern+liger`.

MFU counts 6 FLOPs per matmul parameter per token plus 12 x depth x context x width for
attention (the PaLM convention, no causal discount) against the chip's dense bf16 peak.
Each row is appended to the CSV as soon as it is measured, so a cut-off run keeps what it
has. On a machine without CUDA, `--device cpu --budget 20k` checks the script end to end.
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

from mutations.catalog import MOVES
from mutations.knobs import extract_knobs, set_knobs
from trainer.baselines import BASELINE
from trainer.datasets import PreparedDataset
from trainer.result import EvalResult
from trainer.runner import build_spec, default_timeout, run_variant

RESULTS = Path(__file__).resolve().parent / "results"
MODERN = ("rmsnorm", "drop_linear_biases", "rope", "qk_norm", "relu2", "logit_softcap", "zero_init_proj", "muon",
          "wsd_schedule")
# Dense bf16 tensor-core peak, TFLOP/s (NVIDIA datasheets, SXM parts).
PEAK_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0}


def modern_stack() -> str:
    """The baseline with the modern recipe applied move by move (each rewrites the previous result)."""
    source = BASELINE.read_text()
    for name in MODERN:
        source = MOVES[name].apply(source)
    return source


def configurations(budget: str, long_budget: str) -> list[tuple[str, str, str]]:
    """(name, budget, source) in the order they run; the first baseline fills the compile cache."""
    baseline, modern = BASELINE.read_text(), modern_stack()
    return [
        ("baseline (cold cache)", budget, baseline),
        ("baseline", budget, baseline),
        ("baseline", long_budget, baseline),
        ("baseline+liger", budget, set_knobs(baseline, {"FUSED_CE": True}, device="cuda")),
        ("baseline-eager", budget, set_knobs(baseline, {"COMPILE": False}, device="cuda")),
        ("modern", budget, modern),
        ("modern+liger", budget, set_knobs(modern, {"FUSED_CE": True}, device="cuda")),
    ]


def flops_per_token(source: str, device: str, vocab_size: int, seq_len: int) -> float:
    knobs = {k.name: k.default for k in extract_knobs(source, device=device)}
    depth, width, ratio = knobs["DEPTH"], knobs["WIDTH"], knobs["MLP_RATIO"]
    matmul_params = depth * (4 + 2 * ratio) * width**2 + vocab_size * width
    return 6 * matmul_params + 12 * depth * seq_len * width


def peak_flops(device_name: str, override: float) -> float:
    if override:
        return override * 1e12
    for chip, tflops in PEAK_TFLOPS.items():
        if chip in device_name:
            return tflops * 1e12
    return 0.0


def row(name: str, source: str, result: EvalResult, spec, vocab_size: int, peak: float) -> dict:
    flops = flops_per_token(source, spec.device.split(":")[0], vocab_size, spec.profile.seq_len)
    overhead = result.wall_seconds - result.training_seconds
    return {
        "config": name, "budget": result.budget, "status": result.status.value, "val_bpb": result.val_bpb,
        "steps": result.steps, "tokens_per_s": round(result.tokens_per_second),
        "mfu": round(result.tokens_per_second * flops / peak, 4) if peak else "",
        "peak_memory_gb": round(result.peak_memory_mb / 1024, 2),
        "parameters": result.extra.get("parameters", ""),
        "wall_s": round(result.wall_seconds, 1), "training_s": round(result.training_seconds, 1),
        "startup_s": round(result.extra.get("startup_seconds", 0.0), 1),
        "eval_s": round(result.extra.get("eval_seconds", 0.0), 1),
        "overhead_s": round(overhead, 1),
        "overhead_fraction": round(overhead / result.training_seconds, 3) if result.training_seconds else "",
        "message": result.message[:120],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--budget", default="30s", help="budget of each throughput run")
    parser.add_argument("--long-budget", default="60s", help="the second budget the overhead is measured at")
    parser.add_argument("--only", default="", help="comma-separated config names to run (default: all)")
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="dense bf16 peak (default: by chip name)")
    parser.add_argument("--output", default=str(RESULTS / "gpu_throughput.csv"))
    args = parser.parse_args()

    import torch  # only the driver's view of the chip; every run happens in the sandbox

    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    peak = peak_flops(device_name, args.peak_tflops)
    print(f"device: {device_name}, torch {torch.__version__}, peak {peak / 1e12:.0f} TFLOP/s", flush=True)
    wanted = set(args.only.split(",")) if args.only else None
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(output, "w", newline="") as f:
        writer, vocab_size = None, 0
        for name, budget, source in configurations(args.budget, args.long_budget):
            if wanted and name not in wanted:
                continue
            spec = build_spec(budget, seed=0, device=args.device)
            vocab_size = vocab_size or PreparedDataset.load(spec.dataset_root).vocab_size
            started = time.perf_counter()
            result = run_variant(source, spec, timeout_s=default_timeout(spec.budget))
            measured = {"device": device_name, **row(name, source, result, spec, vocab_size, peak)}
            print(f"{time.perf_counter() - started:6.1f}s {measured}", flush=True)
            if not result.status.is_ok():
                print(result.log_tail, file=sys.stderr, flush=True)
            if writer is None:
                writer = csv.DictWriter(f, fieldnames=list(measured))
                writer.writeheader()
            writer.writerow(measured)
            f.flush()


if __name__ == "__main__":
    main()
