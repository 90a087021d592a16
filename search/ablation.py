"""The ablation of an answer's atoms: each alone on the baseline (add-one) and the answer without it (leave-one-out).

Every strategy answers with a stack of atoms; the rows built here are what `search ablate`,
the report and `search export` read (meta "result" "ablation"). The add-one and leave-one-out
variants are always registered, so an export can rebuild each atom's change; they are evaluated
only where a strategy chose to run them (or later, by `search ablate --seeds N`).
"""
from __future__ import annotations

from mutations.diff import structural_diff
from mutations.edits import apply_mutation
from mutations.merge import MergeConflict, merge
from population.stats import Paired, paired
from population.store import Variant
from search.atoms import Atom
from search.context import Search


def variants(search: Search, members: list[Atom], stack: Variant) -> list[tuple[Atom, Variant, Variant | None]]:
    """(atom, the baseline with only it, the stack without it) for each member; without is None when the other
    members only merge through this one."""
    base = search.baseline
    found = []
    for atom in members:
        alone = _variant(search, apply_mutation(base.source, atom.mutation), base, f"only {atom.name}", (atom.name,))
        others = [a for a in members if a is not atom]
        try:
            without = base if not others else _variant(
                search, apply_mutation(base.source, _merge_all(base.source, [a.mutation for a in others])), stack,
                f"stack without {atom.name}", tuple(a.name for a in others))
        except MergeConflict:
            without = None
        found.append((atom, alone, without))
    return found


def rows(search: Search, stack: Variant, members: list[tuple[Atom, Variant, Variant | None]],
         estimates: dict[str, float], model: dict[str, dict] | None = None) -> list[dict]:
    """The ablation table's rows: measured add-one and leave-one-out on every seed both variants ran at the full
    budget; `estimates` is what each atom measured when it was accepted; `model` adds the strategy's own estimates
    (atom -> {"add_one": {"mean", "sd"}, "leave_one_out": {...}})."""
    budget = search.top_budget
    base = search.scores(search.baseline.id, budget)
    whole = search.scores(stack.id, budget)
    found = []
    for atom, alone, without in members:
        add_one = paired(search.scores(alone.id, budget), base)
        leave_one_out = paired(whole, search.scores(without.id, budget)) if without else None
        row = {"atom": atom.name, "description": atom.description, "bundled": atom.bundled,
               "estimate": estimates.get(atom.name), "alone": alone.id, "without": without.id if without else None,
               "add_one": _dict(add_one), "leave_one_out": _dict(leave_one_out)}
        if model is not None:
            row["model"] = model.get(atom.name)
        found.append(row)
    return found


def _variant(search: Search, source: str, parent: Variant, description: str, atoms: tuple[str, ...]) -> Variant:
    mutation = structural_diff(parent.source, source, name="ablation", description=description)
    variant, _ = search.add_variant(source, parents=(parent.id,), mutation=mutation, origin="ablation", atoms=atoms)
    return variant


def _merge_all(base: str, mutations: list) -> object:
    combined = mutations[0]
    for mutation in mutations[1:]:
        combined = merge(base, combined, mutation)
    return combined


def _dict(comparison: Paired | None) -> dict | None:
    return None if comparison is None else comparison.to_dict()
