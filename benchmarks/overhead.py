"""What an evaluation costs beyond its training budget, and what the search driver costs.

    .venv/bin/python benchmarks/overhead.py                  # about 9 minutes on 2 idle cores

1. The baseline at 30 s, 60 s and 300 s wall-clock budgets through the sandboxed runner, one
   at a time, as the search runs them: after a short warm-up run, each run takes the spare
   training interpreter and the spare scorer its predecessor started (trainer/spares.py), each
   in its own namespaces, and starts the next ones while it trains. Overhead = wall time minus
   training time, split into start-up (the handover of the run to the first batch: data,
   model; imports only where no spare was ready), warm-up and probes (steps left out of the
   budget, the 3 probes, the batch server's bookkeeping), the export (last step to the
   model's arrival at the runner: torch.export and the transfer), scoring (the trusted scorer:
   the graph checked, scored rows, check rows and their twins) and the store (writing the
   result to SQLite, timed here on a scratch store). Reported as a fraction of the budget;
   the target is < 3% at 60 s. The spares' imports run beside the previous run's timed
   training: on a busy CPU they cost it some throughput, not overhead.
2. The driver: a short `search evolve` in a subprocess, sampling the CPU time of the driver
   process alone (its evaluations are children and not counted) against its wall time.

Writes benchmarks/results/overhead.csv and overhead.md (overhead_cuda.* with `--device cuda`,
which measures a GPU; benchmarks/gpu_throughput.py also reports overhead per configuration).
"""
from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import psutil

from population.store import Store
from trainer.baselines import BASELINE
from trainer.result import EvalResult
from trainer.runner import build_spec, default_timeout, run_variant
from trainer.spares import Spares

RESULTS = Path(__file__).resolve().parent / "results"


def store_seconds(result: EvalResult, repeats: int = 20) -> float:
    """Mean time to record one evaluation (begin + finish) in a fresh SQLite store."""
    with tempfile.TemporaryDirectory() as folder:
        store = Store.in_run_dir(folder)
        variant, _ = store.add_variant(BASELINE.read_text(), origin="baseline")
        started = time.perf_counter()
        for seed in range(repeats):
            key = store.begin_evaluation(variant.id, result.budget, seed)
            store.finish_evaluation(key, result)
        elapsed = (time.perf_counter() - started) / repeats
        store.close()
    return elapsed


def evaluation_row(budget: str, device: str, spares: Spares) -> dict:
    spec = build_spec(budget, seed=0, device=device)
    result = run_variant(BASELINE.read_text(), spec, timeout_s=default_timeout(spec.budget), spares=spares)
    if not result.status.is_ok():
        raise SystemExit(f"the baseline ended {result.status.value} at {budget}: {result.message}")
    startup = result.extra.get("startup_seconds", 0.0)
    export = result.extra.get("export_seconds", 0.0)
    scoring = result.extra.get("scoring_seconds", 0.0)
    overhead = result.wall_seconds - result.training_seconds
    store = store_seconds(result)
    return {
        "budget": budget, "device": device, "wall_s": round(result.wall_seconds, 2),
        "training_s": round(result.training_seconds, 2), "startup_s": round(startup, 2),
        "warmup_and_probes_s": round(overhead - startup - export - scoring, 2), "export_s": round(export, 2),
        "scoring_s": round(scoring, 2), "store_s": round(store, 4), "overhead_s": round(overhead + store, 2),
        "overhead_fraction": round((overhead + store) / spec.budget.amount, 4), "steps": result.steps,
        "isolation": result.isolation,
    }


def driver_cpu(seconds: str, budget: str) -> dict:
    """CPU share of the `search evolve` driver process during a short search."""
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, "-m", "search", "evolve", "--run-dir", str(Path(folder) / "run"), "--time",
                   seconds, "--budget", budget, "--device", "cpu", "--stack-trials", "1", "--combine-max", "2"]
        process = psutil.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started, last = time.perf_counter(), None
        while process.poll() is None:
            try:
                times = process.cpu_times()
                last = (times.user + times.system, time.perf_counter() - started)
            except psutil.Error:
                break
            time.sleep(0.5)
        if process.returncode not in (0, None) or last is None:
            raise SystemExit(f"the search ended with exit code {process.returncode}")
    cpu, wall = last
    return {"driver_cpu_s": round(cpu, 1), "driver_wall_s": round(wall, 1), "driver_cpu_share": round(cpu / wall, 4)}


def machine(device: str) -> str:
    if device == "cpu":
        return f"{psutil.cpu_count()} CPU cores"
    import torch  # the driver's view of the chip only

    return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budgets", default="30s,60s,300s", help="wall-clock budgets of the baseline runs")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--warmup-budget", default="3s", help="the unmeasured first run (compile cache, a spare)")
    parser.add_argument("--search-time", default="3min", help="--time of the search whose driver is measured "
                                                              "(0: skip it)")
    parser.add_argument("--search-budget", default="100k", help="--budget of that search")
    args = parser.parse_args()

    with Spares() as spares:
        evaluation_row(args.warmup_budget, args.device, spares)
        rows = []
        for budget in args.budgets.split(","):
            spares.wait_ready(args.device, 0, timeout_s=600)  # as a search's next run finds them
            rows.append(evaluation_row(budget, args.device, spares))
            print(rows[-1], file=sys.stderr, flush=True)
    driver = driver_cpu(args.search_time, args.search_budget) if args.search_time != "0" else None
    print(driver, file=sys.stderr, flush=True)

    RESULTS.mkdir(exist_ok=True)
    name = "overhead" if args.device == "cpu" else "overhead_cuda"
    with open(RESULTS / f"{name}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        "# Overhead per evaluation, and the driver's CPU", "",
        f"Command: `.venv/bin/python benchmarks/overhead.py {' '.join(sys.argv[1:])}` "
        f"({datetime.now(timezone.utc):%Y-%m-%d}, {machine(args.device)}, one run at a time).", "",
        "| budget | wall s | training s | start-up s | warm-up + probes s | export s | scoring s | store s | "
        "overhead / budget | isolation |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *(f"| {r['budget']} | {r['wall_s']} | {r['training_s']} | {r['startup_s']} | {r['warmup_and_probes_s']} | "
          f"{r['export_s']} | {r['scoring_s']} | {r['store_s']} | {100 * r['overhead_fraction']:.1f}% | "
          f"{r['isolation']} |" for r in rows),
        "",
        f"Driver (`search evolve --time {args.search_time} --budget {args.search_budget}`, its own process, "
        f"evaluations excluded): {driver['driver_cpu_s']} CPU s over {driver['driver_wall_s']} s of wall time, "
        f"{100 * driver['driver_cpu_share']:.1f}% of one core." if driver else "Driver: not measured.", "",
    ]
    (RESULTS / f"{name}.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
