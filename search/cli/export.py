"""`search export`: a search's result as a patch, a git branch, a JSON list of its mutations, or results.tsv.

The default variant is the final stack (meta "result"); `--variant` picks any other. Everything
is read from the store, so export works on a run copied to another machine, or from --storage.
"""
from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

from search.cli._output import FORMAT_OPTION, Output
from search.cli._runs import RUN_DIR_ARGUMENT, STORAGE_OPTION, RunRef, find_run, reading
from trainer.errors import UserError

if TYPE_CHECKING:
    from mutations.edits import Mutation
    from population.store import Decision, Evaluation, Store, Variant

TSV_HEADER = "commit\tval_bpb\tmemory_gb\tstatus\tdescription"
# The decisions that say how a variant ended; a later re-check (confirmed/retired) overrides acceptance.
_VERDICTS = ("accepted", "rejected", "failed", "refused", "pruned", "confirmed", "retired")
_GIT = ("git", "-c", "user.name=evotrain", "-c", "user.email=evotrain@localhost", "-c", "commit.gpgsign=false",
        "-c", "core.autocrlf=false")


@click.command()
@RUN_DIR_ARGUMENT
@STORAGE_OPTION
@click.option("--variant", "prefix", default=None,
              help="Export this variant (an id or a unique prefix of one) instead of the final stack.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the unified diff against the baseline to this file (default: print it).")
@click.option("--git", "git_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Commit the baseline, then each atomic mutation, on a new branch of this repository, from "
                   "its current commit (a new folder is made a repository).")
@click.option("--tsv", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write every variant evaluated at the top rung in autoresearch's results.tsv format.")
@FORMAT_OPTION
def export(run_dir: Path | None, storage: str | None, prefix: str | None, output: Path | None,
           git_dir: Path | None, tsv: Path | None, output_format: str) -> None:
    """Export the final stack (or --variant) of the search in RUN_DIR (default: the newest folder under ./runs):
    a patch that `git apply` accepts on the baseline (printed without -o), a branch with one commit per atomic
    mutation, the mutation list (--format json), or autoresearch's results.tsv."""
    ref = find_run(run_dir, storage, "export")
    with reading(ref) as store:
        run = Run.load(store, ref)
    out = Output(output_format)
    variant = run.pick(prefix)
    if output is not None or git_dir is not None or (tsv is None and not out.json):
        run.check_changed(variant)
    written = {}
    if tsv is not None:
        rows = tsv_rows(run)
        tsv.write_text("\n".join([TSV_HEADER, *rows]) + "\n", encoding="utf-8")
        written["tsv"] = {"path": str(tsv), "rows": len(rows)}
    if output is not None:
        output.write_text(run.patch(variant), encoding="utf-8")
        written["patch"] = {"path": str(output)}
    if git_dir is not None:
        branch, made = write_branch(git_dir, run, variant)
        written["git"] = {"repository": str(git_dir), "branch": branch, "commits": made}
    out.note(run.describe(variant))  # after the work, so that a refusal is the only line
    if out.json:
        click.echo(json.dumps({**run.mutations(variant), "written": written}, indent=2))
    elif not written:
        click.echo(run.patch(variant), nl=False)
    else:
        out.block(f"export of {variant.id}", _written_rows(written), written)


def _written_rows(written: dict) -> list[tuple[str, str]]:
    rows = []
    if "patch" in written:
        rows.append(("patch", written["patch"]["path"]))
    if "git" in written:
        git = written["git"]
        rows.append(("git", f"{git['repository']}: branch {git['branch']}, {len(git['commits'])} commits"))
    if "tsv" in written:
        rows.append(("tsv", f"{written['tsv']['path']}: {written['tsv']['rows']} variants"))
    return rows


# -------------------------------------------------------------------- the run, as stored
@dataclass(frozen=True)
class Run:
    ref: RunRef
    meta: dict
    variants: dict[str, Variant]      # in creation order
    decisions: list[Decision]
    evaluations: list[Evaluation]
    baseline: Variant

    @classmethod
    def load(cls, store: Store, ref: RunRef) -> Run:
        meta = store.meta()
        if "baseline" not in meta or "options" not in meta:
            raise UserError(f"{ref.name} has no baseline recorded: its search stopped before it started; "
                            "run search evolve again to start it")
        variants = {v.id: v for v in store.variants()}
        return cls(ref, meta, variants, store.decisions(), store.evaluations(), variants[meta["baseline"]["id"]])

    @property
    def name(self) -> str:
        """The run's name: its directory's name, as search evolve made it."""
        return Path(self.meta["options"]["run_dir"]).name

    @property
    def where(self) -> str:
        """The run for commit messages: its directory's full path, or the store's URL."""
        return str(self.ref.run_dir.resolve()) if self.ref.run_dir is not None else self.ref.url

    @property
    def file_name(self) -> str:
        """The baseline's file name, used inside the patch and in the git repository."""
        path = self.meta["baseline"]["path"]
        return "train.py" if path == "built-in" else Path(path).name

    def files(self, source: str) -> dict[str, str]:
        """A variant's files by name: its script, and the local modules of a multi-file baseline."""
        from trainer.program import Program

        program = Program.parse(source)
        return {self.file_name if name == program.script_name else name: text for name, text in program.files}

    @property
    def result(self) -> dict | None:
        return self.meta.get("result")

    def is_stack(self, variant: Variant) -> bool:
        return self.result is not None and variant.id == self.result["stack"]

    def pick(self, prefix: str | None) -> Variant:
        if prefix is None:
            if self.result is None:
                raise UserError(f"{self.ref.name} has no final stack yet (phase {self.meta.get('phase', 'noise')}): "
                                "wait for the search to finish, or pass --variant ID (see search status)")
            return self.variants[self.result["stack"]]
        found = [v for v in self.variants.values() if v.id.startswith(prefix.lower())]
        if len(found) == 1:
            return found[0]
        if not found:
            raise UserError(f"no variant {prefix!r} in {self.ref.name}: pass an id or a unique prefix of one "
                            "(search status shows them, and so does the commit column of search export --tsv)")
        raise UserError(f"variant prefix {prefix!r} matches {len(found)} variants ({', '.join(v.id for v in found[:4])}"
                        f"{', ...' if len(found) > 4 else ''}): give more characters")

    def describe(self, variant: Variant) -> str:
        if variant.id == self.baseline.id:
            return f"{variant.id}: the baseline"
        if self.is_stack(variant):
            return f"{variant.id}: the final stack of {len(self.result['ablation'])} atoms, against the baseline"
        steps = len(self.lineage(variant))
        return f"{variant.id}: {variant.origin}, {steps} mutation{'s' * (steps != 1)} from the baseline"

    def check_changed(self, variant: Variant) -> None:
        if variant.source == self.baseline.source:
            what = "its final stack is the baseline: no change beat it" if self.is_stack(variant) else \
                "this variant's source is the baseline's"
            raise UserError(f"nothing to export from {self.ref.name}: {what} (--tsv still writes the log)")

    def patch(self, variant: Variant) -> str:
        from mutations.patch import unified_diff

        return unified_diff(self.baseline.source, variant.source, path=self.file_name)

    def lineage(self, variant: Variant) -> list[Variant]:
        """The variants from the baseline (excluded) to this one, along first parents."""
        chain = []
        while variant.id != self.baseline.id and variant.parents:
            chain.append(variant)
            variant = self.variants[variant.parents[0]]
        return chain[::-1]

    def verdict(self, variant_id: str) -> dict | None:
        """How the search judged a variant: its accepting decision (or the last verdict), or its stack step."""
        mine = [d for d in self.decisions if d.variant_id == variant_id and d.kind in _VERDICTS]
        chosen = next((d for d in mine if d.kind == "accepted"), mine[-1] if mine else None)
        if chosen is not None:
            return {"kind": chosen.kind, "rung": chosen.rung, "reference": chosen.reference,
                    "reason": chosen.detail.get("reason", ""), "paired": _numbers(chosen.detail.get("paired"))}
        step = next((s for s in (self.result or {}).get("steps", []) if s.get("variant") == variant_id), None)
        if step is not None:
            return {"kind": "stacked" if step["kept"] else "left out of the stack", "rung": None,
                    "reference": None, "reason": step.get("reason", ""), "paired": _numbers(step.get("paired"))}
        return None

    # ---------------------------------------------------------------- the mutation list (--format json)
    def mutations(self, variant: Variant) -> dict:
        data = {"run": self.ref.name, "variant": variant.id, "baseline": self.baseline.id, "file": self.file_name,
                "stack": self.is_stack(variant)}
        if self.is_stack(variant):
            data["atoms"] = [{**{k: row[k] for k in ("atom", "description", "bundled", "estimate", "alone")},
                              "add_one": _numbers(row["add_one"]), "leave_one_out": _numbers(row["leave_one_out"]),
                              "mutation": mutation.to_dict()}
                             for row, mutation in zip(self.result["ablation"], self.atom_mutations())]
            data["val_delta"] = _numbers(self.result.get("val_delta"))
            data["test_delta"] = _numbers(self.result.get("test_delta"))
        else:
            data["lineage"] = [{"variant": v.id, "parent": v.parents[0], "origin": v.origin, "mutation": v.mutation,
                                "decision": self.verdict(v.id)} for v in self.lineage(variant)]
        return data

    def atom_mutations(self) -> list[Mutation]:
        """Each stack member's change relative to the baseline: the diff to its add-one variant."""
        from mutations.diff import structural_diff

        return [structural_diff(self.baseline.source, self.variants[row["alone"]].source, row["atom"],
                                row["description"]) for row in self.result["ablation"]]


def _numbers(paired: dict | None) -> dict | None:
    """The parts of a stored paired comparison a reader needs; None when it was never measured."""
    if paired is None:
        return None
    return {k: paired[k] for k in ("mean", "ci_low", "ci_high", "n", "p_better")}


# -------------------------------------------------------------------- commits (--git)
_ADDS_NOTHING = "It adds nothing to the commits before it: its change is already there."
_OVERLAPS = "Its change overlaps earlier ones (a re-tuned knob): this commit takes its version of the code both edit."


@dataclass(frozen=True)
class Commit:
    message: str
    source: str


def commits(run: Run, variant: Variant) -> list[Commit]:
    """The commits after the baseline's: the stack's atoms cumulatively, or the variant's lineage."""
    where = f"search run: {run.where}"
    if not run.is_stack(variant):
        return [Commit(_lineage_message(run, v, where), v.source) for v in run.lineage(variant)]
    made, source, combined = [], run.baseline.source, None
    for row, mutation in zip(run.result["ablation"], run.atom_mutations()):
        combined, after, overlaps = _stacked(run.baseline.source, combined, mutation, source,
                                             run.variants[row["alone"]].source)
        note = _ADDS_NOTHING if after == source else _OVERLAPS if overlaps else ""
        made.append(Commit(_atom_message(row, note, f"{where} (variant {row['alone']})"), after))
        source = after
    if source != variant.source:
        made.append(Commit("remaining changes of the stack\n\nWhat applying the atoms one by one does not reproduce "
                           "(a re-tuned or bundled atom): with it the file is the measured stack.\n"
                           f"stack vs baseline: {_paired_line(run.result.get('val_delta'))} (validation), "
                           f"{_paired_line(run.result.get('test_delta'))} (held-out test)\n\n"
                           f"{where} (variant {variant.id})\n", variant.source))
    return made


def _stacked(base: str, combined: Mutation | None, mutation: Mutation, current: str,
             alone: str) -> tuple[Mutation | None, str, bool]:
    """(the combined mutation, the source, whether it overlapped) after adding one atom: a 3-way merge as the
    combine step made the stack, or, where the atom's change overlaps earlier ones (a re-tuned knob), its
    version of the units it edits."""
    from mutations.diff import structural_diff
    from mutations.edits import ApplyError, Mutation, apply_mutation
    from mutations.merge import MergeConflict, merge

    try:
        merged = mutation if combined is None else merge(base, combined, mutation)
        return merged, apply_mutation(base, merged), False
    except (MergeConflict, ApplyError):
        pass
    ours = Mutation(tuple(e for e in structural_diff(current, alone).edits if e.target in mutation.targets))
    try:
        source = apply_mutation(current, ours) if ours.edits else current
    except ApplyError:
        source = current
    return (structural_diff(base, source) if source != base else combined), source, True


def _atom_message(row: dict, note: str, where: str) -> str:
    alone, left_out, model = row["add_one"], row["leave_one_out"], row.get("model")
    if alone is None and left_out is None and model is not None:  # additive: the ablation is the model's estimate
        lines = [f"{row['atom']}: {model['add_one']['mean']:+.4f} bpb alone, {model['leave_one_out']['mean']:+.4f} "
                 "in the stack (model)", "",
                 f"alone on the baseline (add-one): {_estimate_line(model['add_one'])}",
                 f"left out of the stack (leave-one-out): {_estimate_line(model['leave_one_out'])}",
                 f"probability that it helps in the stack: {model['p_helps']:.3f}",
                 "Estimated by the additive model from every run of the search, not by runs of this change alone."]
    else:
        lines = [f"{row['atom']}: {_mean(alone)} bpb alone, {_mean(left_out)} in the stack", "",
                 f"alone on the baseline (add-one): {_paired_line(alone)}",
                 f"left out of the stack (leave-one-out, stack minus stack without it): {_paired_line(left_out)}",
                 f"against its parent when it was accepted: {row['estimate']:+.4f} bpb"]
    return "\n".join(lines + ["", row["description"]] + ([note] if note else []) + ["", where]) + "\n"


def _lineage_message(run: Run, variant: Variant, where: str) -> str:
    verdict = run.verdict(variant.id) or {}
    paired = verdict.get("paired")
    mutation = variant.mutation or {}
    lines = [f"{mutation.get('name') or variant.origin}: {_mean(paired)} bpb vs its parent", "",
             f"{verdict.get('kind', 'not judged')} against {variant.parents[0]}: {_paired_line(paired)}"]
    if verdict.get("reason"):
        lines.append(verdict["reason"])
    return "\n".join(lines + ["", mutation.get("description", ""), "", f"{where} (variant {variant.id})"]) + "\n"


def _estimate_line(estimate: dict) -> str:
    return f"{estimate['mean']:+.4f} bpb, 95% CI [{estimate['ci_low']:+.4f}, {estimate['ci_high']:+.4f}]"


def _mean(paired: dict | None) -> str:
    return "n/a" if paired is None else f"{paired['mean']:+.4f}"


def _paired_line(paired: dict | None) -> str:
    if paired is None:
        return "not measured"
    if paired["ci_low"] is None:
        return f"{paired['mean']:+.4f} bpb, n={paired['n']} (no test)"
    return (f"{paired['mean']:+.4f} bpb, 95% CI [{paired['ci_low']:+.4f}, {paired['ci_high']:+.4f}], "
            f"n={paired['n']}, p={paired['p_better']:.3g}")


def write_branch(folder: Path, run: Run, variant: Variant) -> tuple[str, list[dict]]:
    """Commit the baseline and then each change on a new branch of the repository in folder."""
    planned = commits(run, variant)  # before touching the repository: a store problem leaves it as it was
    _repository(folder)
    branch = f"evotrain/{re.sub(r'[^A-Za-z0-9._-]+', '-', run.name).strip('.-') or 'run'}-{variant.id[:8]}"
    if _git(folder, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}", check=False).returncode == 0:
        raise UserError(f"branch {branch} already exists in {folder}: delete it (git branch -D {branch}) "
                        "or export into another repository")
    names = list(run.files(run.baseline.source))
    if _git(folder, "status", "--porcelain", "--untracked-files=no").stdout.strip() or \
            "??" in _git(folder, "status", "--porcelain", "--", *names).stdout:
        raise UserError(f"{folder} has uncommitted changes: commit or stash them first")
    _git(folder, "checkout", "-q", "-b", branch)
    made = []
    baseline = Commit(f"baseline of {run.name}\n\nThe file the search started from.\n\n"
                      f"search run: {run.where} (variant {run.baseline.id})\n", run.baseline.source)
    for commit in [baseline, *planned]:
        for name, text in run.files(commit.source).items():
            (folder / name).write_bytes(text.encode())
        _git(folder, "add", "--", *names)
        if commit is baseline and _git(folder, "diff", "--cached", "--quiet", check=False).returncode == 0 \
                and _git(folder, "rev-parse", "--verify", "--quiet", "HEAD", check=False).returncode == 0:
            continue  # the repository already holds the baseline: the branch starts from it
        _git(folder, "commit", "-q", "--no-verify", "--allow-empty", "-F", "-", stdin=commit.message)
        made.append({"commit": _git(folder, "rev-parse", "HEAD").stdout.strip(),
                     "subject": commit.message.splitlines()[0]})
    return branch, made


def _repository(folder: Path) -> None:
    """folder as the top of a git repository: one already, or a new or empty folder made one."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--git {folder} is a file: pass a git repository or a new folder")
    if folder.is_dir():
        top = _git(folder, "rev-parse", "--show-toplevel", check=False)
        if top.returncode == 0 and Path(top.stdout.strip()).resolve() == folder.resolve():
            return
        if any(folder.iterdir()):
            raise UserError(f"--git {folder} is not the top folder of a git repository: pass a repository "
                            "or a new folder")
    folder.mkdir(parents=True, exist_ok=True)
    _git(folder, "init", "-q")


def _git(folder: Path, *args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run([*_GIT, *args], cwd=folder, capture_output=True, text=True, input=stdin)
    except FileNotFoundError:
        raise UserError("--git needs the git program: install git, or export a patch with -o") from None
    if check and done.returncode != 0:
        message = (done.stderr.strip() or done.stdout.strip()).splitlines()
        raise UserError(f"git {args[0]} failed in {folder}: {message[-1] if message else done.returncode}")
    return done


# -------------------------------------------------------------------- results.tsv (--tsv)
def tsv_rows(run: Run) -> list[str]:
    """One line per variant evaluated at the top rung, in creation order, as autoresearch logs experiments:
    mean val_bpb on the top rung's seeds, peak memory in GB, keep/discard/crash, the description."""
    from population.ladder import Ladder
    from trainer.budget import Budget

    options = run.meta["options"]
    top = Ladder.build(Budget.parse(options["budget"]), tuple(options["fractions"]), tuple(options["seeds"]),
                       options["eta"], options["seed"]).top
    rows = []
    for variant in run.variants.values():
        results = [e.result for e in run.evaluations if e.variant_id == variant.id and e.budget == str(top.budget)
                   and e.split == "val" and e.seed in top.seeds and e.result is not None]
        if results:
            rows.append(_tsv_row(run, variant, results))
    return rows


def _tsv_row(run: Run, variant: Variant, results: list) -> str:
    scores = [r.val_bpb for r in results if r.status.is_ok()]
    status = _status(run, variant, failed=not scores and any(r.status.is_failure() for r in results))
    val_bpb = sum(scores) / len(scores) if scores and status != "crash" else 0.0
    memory = max(r.peak_memory_mb for r in results) / 1024 if status != "crash" else 0.0
    description = "baseline" if variant.id == run.baseline.id else \
        (variant.mutation or {}).get("description") or variant.origin
    return f"{variant.id[:7]}\t{val_bpb:.6f}\t{memory:.1f}\t{status}\t{' '.join(description.split())}"


def _status(run: Run, variant: Variant, failed: bool) -> str:
    """keep: the baseline, an accepted change not retired by its re-check, a kept stack step, the final stack;
    crash: a failed or refused variant, or one whose top-rung runs all failed; discard: the rest."""
    verdict = [d.kind for d in run.decisions if d.variant_id == variant.id and d.kind in _VERDICTS]
    last = verdict[-1] if verdict else None
    if failed or last in ("failed", "refused"):
        return "crash"
    kept_steps = {s.get("variant") for s in (run.result or {}).get("steps", []) if s.get("kept")}
    if variant.id == run.baseline.id or last in ("accepted", "confirmed") or variant.id in kept_steps \
            or run.is_stack(variant):
        return "keep"
    return "discard"
