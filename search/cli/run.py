"""`search run`: one trusted evaluation of one train.py, with live progress and a summary."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from search.cli._options import DATASET_OPTION, DEVICE_OPTION, TOKENIZER_OPTION
from search.cli._output import FORMAT_OPTION, Output
from trainer.errors import UserError

_DEFAULT_BUDGET = {"cpu": "500k", "cuda": "300s"}  # tokens on shared CPUs, wall-clock on a GPU (autoresearch)


class _ProgressView:
    """Streams the runtime's events: a live bar on a terminal, plain probe lines otherwise."""

    def __init__(self, out: Output, label: str) -> None:
        self._out = out
        self._bar = None
        if sys.stderr.isatty():
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                                 TextColumn("{task.fields[status]}"), TimeElapsedColumn(), transient=True)
            self._task = self._bar.add_task(label, total=1.0, status="starting")

    def __enter__(self) -> _ProgressView:
        if self._bar:
            self._bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._bar:
            self._bar.stop()

    def __call__(self, event: dict) -> bool:
        kind = event.get("event")
        if kind in ("progress", "probe") and self._bar:
            status = f"step {event['step']}  loss {event.get('train_loss') or float('nan'):.3f}"
            if kind == "probe":
                status += f"  probe val_bpb {event['val_bpb']:.3f}"
            self._bar.update(self._task, completed=event["progress"], status=status)
        elif kind == "probe":
            self._out.note(f"  {event['progress']:>4.0%}  step {event['step']:>6}  val_bpb {event['val_bpb']:.4f} (probe)")
        elif kind == "start" and not self._bar:
            self._out.note(f"  started on {event['device']} (torch {event['torch']}, {event['threads']} threads)")
        return False


@click.command()
@click.argument("train_py", required=False, type=click.Path(path_type=Path))
@click.option("--budget", default=None, help="Training budget: seconds (30s, 5min) or tokens (500k, 2M). "
              "Default: 500k tokens on CPU, 300s on a GPU.")
@click.option("--seed", default=0, show_default=True, help="Seed for initialisation and batch order.")
@DEVICE_OPTION
@DATASET_OPTION
@TOKENIZER_OPTION
@click.option("--threads", default=0, help="CPU threads for torch (0: torch's default).")
@click.option("--timeout", "timeout_s", type=float, default=None, help="Kill the run after this many seconds "
              "(default: from the budget).")
@click.option("--memory", "memory_mb", type=int, default=None, help="Memory limit in MB (default: 80% of RAM).")
@click.option("--split", type=click.Choice(["val", "test"]), default="val", show_default=True,
              help="Split that finish() scores; test is for final validation only.")
@click.option("--log", "log_path", type=click.Path(path_type=Path), default=None, help="Keep the run's log here.")
@click.option("--compat", is_flag=True, help="Accept a score the script prints itself (autoresearch style, "
              "without the runtime): compatibility mode, marked untrusted.")
@click.option("--require-isolation", is_flag=True, help="Refuse to run where variants cannot get their own "
              "namespaces (the process sandbox is the fallback otherwise).")
@FORMAT_OPTION
def run(train_py: Path | None, budget: str | None, seed: int, device: str, dataset: str, tokenizer: str | None,
        threads: int, timeout_s: float | None, memory_mb: int | None, split: str, log_path: Path | None,
        compat: bool, require_isolation: bool, output_format: str) -> None:
    """Evaluate TRAIN_PY (default: the built-in baseline) once, in the sandboxed runner."""
    from trainer.baselines import BASELINE
    from trainer.program import Program
    from trainer.runner import build_spec, default_timeout, resolve_device, run_variant
    from trainer.trust import TrustPolicy, admit

    out = Output(output_format)
    script = train_py or BASELINE
    if not script.is_file():
        raise UserError(f"no such file: {script}; pass the path of a train.py, or nothing for the built-in baseline")
    device = resolve_device(device)
    spec = build_spec(budget or _DEFAULT_BUDGET[device.split(":")[0]], seed=seed, device=device, dataset=dataset,
                      tokenizer=tokenizer, split=split, threads=threads, log=out.note)
    out.note(f"running {script} on {device}, budget {spec.budget}, seed {seed}, {spec.split} split")
    with _ProgressView(out, script.name) as view:
        result = run_variant(Program.load(script).text, spec, timeout_s=timeout_s or default_timeout(spec.budget),
                             memory_mb=memory_mb, log_path=log_path, on_event=view,
                             compat=True if compat else None, require_isolation=require_isolation)
    result = admit(result, TrustPolicy(allow_untrusted=compat, require_isolation=require_isolation))
    compute = f"{result.cpu_seconds:.1f} CPU s" + (f", {result.flops:.3g} FLOPs" if result.flops else "")
    if "compute_ratio" in result.extra:
        compute += f", {result.extra['compute_ratio']:.2f}x its model's forward+backward"
    rows = [
        ("status", result.status.value + ("" if result.trusted else " (untrusted: printed by the script)")),
        ("val_bpb", f"{result.val_bpb:.4f}" if result.val_bpb is not None else "-"),
        ("steps", f"{result.steps:,}"),
        ("tokens", f"{result.tokens:,} (budget {result.budget})"),
        ("tokens/s", f"{result.tokens_per_second:,.0f}"),
        ("peak memory", f"{result.peak_memory_mb:,.0f} MB"),
        ("training", f"{result.training_seconds:.1f} s"),
        ("wall time", f"{result.wall_seconds:.1f} s (overhead {result.overhead_seconds:.1f} s)"),
        ("compute", compute),
        ("device", result.device),
        ("isolation", result.isolation),
    ]
    if result.message:
        rows.insert(1, ("reason", result.message))
    if log_path:
        rows.append(("log", str(log_path)))
    elif not result.status.is_ok() and result.log_tail:
        out.note("--- log tail ---\n" + "\n".join(result.log_tail.splitlines()[-15:]))
    out.block(f"{script.name}: {result.status.value}", rows, result.to_dict())
    if not result.status.is_ok():
        sys.exit(1)
