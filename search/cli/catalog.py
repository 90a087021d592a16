"""`search catalog`, `search mutate` and `search knobs`: the moves and numbers of a train.py."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from search.cli._options import DEVICE_OPTION
from search.cli._output import FORMAT_OPTION, Output
from trainer.errors import UserError

_SCRIPT = click.argument("train_py", required=False, type=click.Path(path_type=Path))


def _read(train_py: Path | None) -> tuple[Path, str]:
    """The script and its text (with the local modules it imports: a program's text, trainer.program)."""
    from trainer.baselines import BASELINE
    from trainer.program import Program

    script = train_py or BASELINE
    if not script.is_file():
        raise UserError(f"no such file: {script}; pass the path of a train.py, or nothing for the built-in baseline")
    return script, Program.load(script).text


def _save(text: str, output: Path, out: Output) -> None:
    from trainer.program import Program

    written = Program.parse(text).save(output)
    out.note(f"wrote {', '.join(map(str, written))}")


@click.command()
@_SCRIPT
@FORMAT_OPTION
def catalog(train_py: Path | None, output_format: str) -> None:
    """List the catalog's moves and whether each applies to TRAIN_PY (default: the baseline)."""
    from mutations.catalog import MOVES

    _, source = _read(train_py)
    rows = []
    for move in MOVES.values():
        check = move.check(source)
        rows.append({"name": move.name, "category": move.category, "applies": "yes" if check.applies else "no",
                     "cuda only": "yes" if move.cuda_only else "", "why not": check.reason,
                     "description": move.description, "knobs": ", ".join(move.knobs)})
    Output(output_format).table(rows, ["name", "category", "applies", "cuda only", "why not" if any(
        r["why not"] for r in rows) else "description"])


@click.command()
@_SCRIPT
@click.option("--move", "move_name", required=True, help="Name of a catalog move (see `search catalog`).")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Write the changed train.py here (default: only print the diff); for a script with "
              "local modules, a folder for all its files.")
@click.option("--smoke/--no-smoke", default=False, show_default=True,
              help="Also train the result for one step in the sandbox.")
@FORMAT_OPTION
def mutate(train_py: Path | None, move_name: str, output: Path | None, smoke: bool, output_format: str) -> None:
    """Apply one catalog move to TRAIN_PY, validate the result and print its diff."""
    from mutations.catalog import NotApplicable, get
    from mutations.diff import structural_diff
    from mutations.patch import unified_diff
    from mutations.validation import smoke_run, validate_source

    script, source = _read(train_py)
    move = get(move_name)
    try:
        changed = move.apply(source)
    except NotApplicable as reason:
        raise UserError(f"{move.name} does not apply to {script.name}: {reason}") from None
    verdict = validate_source(changed, baseline=source)
    if verdict.ok and smoke:
        verdict = smoke_run(changed)
    out = Output(output_format)
    if output:
        _save(changed, output, out)
    mutation = structural_diff(source, changed, name=f"catalog:{move.name}", description=move.description)
    if out.json:
        out.block("", [], {"move": move.name, "valid": verdict.ok, "refusals": verdict.summary(),
                           "mutation": mutation.to_dict(), "diff": unified_diff(source, changed, script.name)})
    else:
        click.echo(unified_diff(source, changed, script.name), nl=False)
        out.note(f"{move.name}: {len(mutation.edits)} edit(s) of {', '.join(e.target for e in mutation.edits)}; "
                 f"validation: {verdict.summary()}")
    if not verdict.ok:
        sys.exit(1)


@click.command()
@_SCRIPT
@DEVICE_OPTION
@FORMAT_OPTION
def knobs(train_py: Path | None, device: str, output_format: str) -> None:
    """List the numeric knobs of TRAIN_PY that Optuna may tune, with their distributions."""
    from mutations.knobs import knob_table
    from trainer.runner import resolve_device

    _, source = _read(train_py)
    table = knob_table(source, device=resolve_device(device))
    rows = [{k: ("" if v != v else v) for k, v in row.items()} for row in table.to_dict("records")]  # NaN -> ""
    Output(output_format).table(rows, list(table.columns))


@click.command()
@_SCRIPT
@click.option("--mutator", default="catalog", show_default=True,
              help="catalog, anthropic (needs ANTHROPIC_API_KEY) or replay:PATH (recorded LLM answers).")
@click.option("--model", default=None, help="Claude model for --mutator anthropic (default: a current Sonnet).")
@click.option("--direction", "direction_file", type=click.Path(path_type=Path), default=None,
              help="Research direction for the LLM, a markdown file like autoresearch's program.md.")
@click.option("--record", "record_path", type=click.Path(path_type=Path), default=None,
              help="Append every LLM call to this JSONL file, for replay:PATH later.")
@click.option("--max-llm-cost", "max_cost_usd", type=float, default=None, help="Stop calling the LLM past this "
              "many dollars.")
@click.option("--seed", default=0, show_default=True, help="Seed of the catalog's choice.")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Write the changed train.py here (for a script with local modules, a folder for all its files).")
@FORMAT_OPTION
def propose(train_py: Path | None, mutator: str, model: str | None, direction_file: Path | None,
            record_path: Path | None, max_cost_usd: float | None, seed: int, output: Path | None,
            output_format: str) -> None:
    """Ask a mutation source for one validated change of TRAIN_PY and print its diff."""
    from mutations.edits import apply_mutation
    from mutations.knobs import knob_table
    from mutations.patch import unified_diff
    from mutations.sources import NoProposal, ProposalRequest, make_source

    script, source = _read(train_py)
    mutation_source = make_source(mutator, seed=seed, model=model, direction_file=direction_file,
                                  max_cost_usd=max_cost_usd, record_path=record_path)
    request = ProposalRequest(parent_source=source, knob_table=knob_table(source).to_string(index=False))
    try:
        proposal = mutation_source.propose(request)
    except NoProposal as reason:
        raise UserError(f"{mutator} proposed nothing: {reason}") from None
    changed = apply_mutation(source, proposal.mutation)
    out = Output(output_format)
    if output:
        _save(changed, output, out)
    diff = unified_diff(source, changed, script.name)
    if out.json:
        out.block("", [], {"mutation": proposal.mutation.to_dict(), "rationale": proposal.rationale,
                           "expected_effect": proposal.expected_effect, "new_knobs": proposal.new_knobs,
                           "cost_usd": proposal.cost_usd, "diff": diff})
        return
    click.echo(diff, nl=False)
    out.note(f"{proposal.mutation.name}: {proposal.rationale}")
    if proposal.expected_effect:
        out.note(f"expected: {proposal.expected_effect}")
    if proposal.cost_usd:
        out.note(f"cost: ${proposal.cost_usd:.4f}")
