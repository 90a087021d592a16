"""`search adopt`: a nanoGPT- or autoresearch-style script rewritten to the runtime contract, into a new folder.

The diff of every file goes to stdout (a review, and a patch), the summary and notes to stderr. Nothing is
written unless every construct converts.
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from search.cli._output import FORMAT_OPTION, Output
from trainer.errors import UserError


@click.command()
@click.argument("script", type=click.Path(path_type=Path))
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("adopted"),
              show_default=True, help="Folder for the adopted script and the local modules it imports.")
@click.option("--force", is_flag=True, help="Write into a folder that is not empty (the files adopt writes are "
              "replaced, others left alone).")
@FORMAT_OPTION
def adopt(script: Path, out_dir: Path, force: bool, output_format: str) -> None:
    """Rewrite SCRIPT (a nanoGPT- or autoresearch-style train.py) to the runtime contract, into a new folder,
    and print the diff: its data, budget, schedules, device and evaluation become the runtime's. Refuses,
    with every reason, what it cannot convert."""
    from mutations.adopt import adopt as convert
    from mutations.patch import unified_diff

    out = Output(output_format)
    if not script.is_file():
        raise UserError(f"no such file: {script}; pass the path of the training script to adopt")
    if out_dir.exists() and out_dir.resolve() == script.parent.resolve():
        raise UserError(f"-o {out_dir} is the folder of {script.name}: adopting there would overwrite the original; "
                        "pass another folder")
    if out_dir.is_file() or out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise UserError(f"{out_dir} is not an empty folder: pass another -o, or --force to write into it")
    adoption = convert(script)
    out_dir.mkdir(parents=True, exist_ok=True)
    diffs = {}
    for name, (original, adopted) in adoption.files.items():
        (out_dir / name).write_text(adopted, encoding="utf-8")
        diffs[name] = unified_diff(original, adopted, path=name)
    if out.json:
        click.echo(json.dumps({"output": str(out_dir), "files": {n: {"path": str(out_dir / n), "diff": d}
                                                                for n, d in diffs.items()},
                               "left_out": adoption.left_out, "summary": adoption.summary}, indent=2))
        return
    for name, diff in diffs.items():
        click.echo(diff, nl=False)
        if not diff:
            out.note(f"{name}: copied unchanged")
    out.note(f"adopted {script} into {out_dir}:")
    for line in adoption.summary:
        out.note(f"  - {line}")
    for name in adoption.left_out:
        out.note(f"  - {name} is not carried: the runtime takes its role")
    out.note(f"try it: search run {out_dir / script.name} --budget 20k --device cpu; "
             f"evolve it: search evolve --baseline {out_dir / script.name}")
