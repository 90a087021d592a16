"""Combine: the accepted changes as atoms on the baseline, stacked greedily, re-tuned, ablated, tested.

1. Each accepted variant's own change (relative to the parent it beat) is rebased onto the
   baseline by a 3-way merge that also reverts the parent's lineage; a change that cannot be
   separated from its ancestors stays bundled with them.
2. Atoms are stacked in order of their measured effect; each addition is kept only if the
   new stack beats the current one on a one-sided paired test at the top rung.
3. The stack's knobs get a few Optuna trials at the rung below the top; the best is kept if
   it beats the stack at the top rung.
4. Ablation at the top rung: every atom alone on the baseline (add-one) and the stack with
   each atom left out (leave-one-out).
5. The stack and the baseline are evaluated on the held-out test split with fresh seeds.

Every step is a pure function of stored evaluations, so a resumed combine re-derives the
same decisions and only runs what is missing. The result goes to the run's metadata and to
best.patch / best_train.py in the run directory.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from optuna.trial import TrialState

from mutations.diff import structural_diff
from mutations.edits import Mutation, apply_mutation
from mutations.knobs import extract_knobs, set_knobs
from mutations.merge import MergeConflict, merge
from mutations.patch import unified_diff
from population.stats import Paired, paired
from population.store import Variant
from search.evaluator import Request
from search.knob_tuning import knob_values, study_name
from search.ladder import Rung
from trainer.errors import UserError

if TYPE_CHECKING:
    from search.evolve import Evolution


@dataclass(frozen=True)
class Atom:
    name: str               # catalog:rope#1a2b3c4d, tune#..., llm:MODEL#...
    description: str
    variant: str            # the accepted variant whose own change this is
    mutation: Mutation      # relative to the baseline
    estimate: float         # its paired delta against its parent when it was accepted
    bundled: bool = False   # True when it could not be separated from its ancestors


class Combiner:
    def __init__(self, evolution: Evolution) -> None:
        self.evo = evolution
        self.store, self.evaluator, self.ladder = evolution.store, evolution.evaluator, evolution.ladder
        self.baseline = evolution.baseline
        self.base_source = evolution.baseline_source
        self.config = evolution.config

    def run(self) -> dict:
        atoms = self.atoms()[:self.config.combine_max]
        self.evo.event(f"combine: {len(atoms)} atoms " + ", ".join(f"{a.name} ({a.estimate:+.4f})" for a in atoms))
        stack, members, steps = self.stack(atoms)
        stack, members = self.retune(stack, members)
        ablation = self.ablate(stack, members)
        result = {"stack": stack.id, "members": [a.name for a in members], "steps": steps, "ablation": ablation,
                  "val_delta": _dict(self._top_comparison(stack.id, self.baseline.id))}
        self.evo.set_phase("test")
        result["test_delta"] = self.test(stack)
        result["files"] = self.export(stack)
        self.store.set_meta("result", result)
        test = result["test_delta"]
        self.evo.event(f"stack of {len(members)}: held-out test delta {Paired.from_dict(test)}" if test else
                       "no change beat the baseline: nothing to test")
        return result

    # ---------------------------------------------------------------- atoms
    def atoms(self) -> list[Atom]:
        decisions = self.store.decisions()
        out = {d.variant_id for d in decisions if d.kind == "retired"}
        accepted = [d for d in decisions if d.kind == "accepted" and d.variant_id != self.baseline.id
                    and d.variant_id not in out]
        atoms, seen = [], set()
        for decision in accepted:
            variant = self.evo.variants[decision.variant_id]
            if variant.origin in ("merge", "stack"):
                continue  # a merge's changes are its parents' atoms
            atom = self._rebase(variant, Paired.from_dict(decision.detail["paired"]).mean)
            if atom.mutation.key not in seen and atom.mutation.edits:
                seen.add(atom.mutation.key)
                atoms.append(atom)
        return sorted(atoms, key=lambda a: a.estimate)

    def _rebase(self, variant: Variant, estimate: float) -> Atom:
        parent = self.evo.variants[variant.parents[0]]
        mutation = variant.mutation or {}
        name = f"{mutation.get('name') or variant.origin}#{variant.id[:8]}"
        description = mutation.get("description", "")
        if parent.id == self.baseline.id:
            return Atom(name, description, variant.id, structural_diff(self.base_source, variant.source, name), estimate)
        if variant.origin == "tune":
            tuned = self._knobs_on_baseline(parent, variant)
            if tuned is not None:
                return Atom(name, description, variant.id, structural_diff(self.base_source, tuned, name), estimate)
        try:
            to_baseline = structural_diff(parent.source, self.base_source)
            combined = merge(parent.source, to_baseline, structural_diff(parent.source, variant.source))
            source = apply_mutation(parent.source, combined)
            return Atom(name, description, variant.id, structural_diff(self.base_source, source, name), estimate)
        except MergeConflict:
            return Atom(name, description + " (with its ancestors' changes)", variant.id,
                        structural_diff(self.base_source, variant.source, name), estimate, bundled=True)

    def _knobs_on_baseline(self, parent: Variant, child: Variant) -> str | None:
        """A knob trial's values set on the baseline's own knobs: its change, whatever else the parent changed
        to the same constants. None when none of the knobs it moved exists in the baseline."""
        before = {k.name: k.default for k in extract_knobs(parent.source, self.config.device_kind)}
        after = {k.name: k.default for k in extract_knobs(child.source, self.config.device_kind)}
        ours = {k.name for k in extract_knobs(self.base_source, self.config.device_kind)}
        moved = {k: v for k, v in after.items() if k in ours and before.get(k) != v}
        try:
            return set_knobs(self.base_source, moved, self.config.device_kind) if moved else None
        except UserError:  # the values break a constraint of the baseline (a divisor, say)
            return None

    # ---------------------------------------------------------------- stacking
    def stack(self, atoms: list[Atom]) -> tuple[Variant, list[Atom], list[dict]]:
        stack, stack_mutation, members, steps = self.baseline, None, [], []
        for atom in atoms:
            try:
                mutation = atom.mutation if stack_mutation is None else merge(self.base_source, stack_mutation,
                                                                              atom.mutation)
            except MergeConflict as conflict:
                steps.append({"atom": atom.name, "kept": False, "reason": f"conflicts with the stack: {conflict}"})
                continue
            candidate = self._variant(apply_mutation(self.base_source, mutation), stack, "stack", f"+ {atom.name}")
            comparison = self._evaluate_against(candidate, stack, "stack")
            kept = comparison is not None and comparison.better(self.config.alpha)
            steps.append({"atom": atom.name, "variant": candidate.id, "kept": kept, "paired": _dict(comparison)})
            self.evo.event(f"stack + {atom.name}: {comparison} -> {'kept' if kept else 'left out'}")
            if kept:
                stack, stack_mutation = candidate, mutation
                members.append(atom)
        return stack, members, steps

    def retune(self, stack: Variant, members: list[Atom]) -> tuple[Variant, list[Atom]]:
        """A few knob trials on the stack at the rung below the top; the best must beat it at the top."""
        if not members or self.config.stack_trials <= 0:
            return stack, members
        rung = self.ladder.rungs[-2] if len(self.ladder.rungs) > 1 else self.ladder.top
        trials, own = self._stack_trials(stack)
        work = [(Request(v.id, rung.budget, s, purpose="stack tune"), v.source) for v in [stack, *trials]
                for s in rung.seeds]
        self.evaluator.run_all(work)
        means = {v.id: self._mean(v.id, rung) for v in [stack, *trials]}
        told = [(self.evo.trials[v.id][1], means[v.id]) for v in trials] + [(t, means[stack.id]) for t in own]
        for trial_id, value in told:
            self.evo.tuner.tell(trial_id, TrialState.COMPLETE if value is not None else TrialState.FAIL, value)
        scored = [v for v in trials if means[v.id] is not None]
        if not scored or means[stack.id] is None:
            return stack, members
        best = min(scored, key=lambda v: means[v.id])
        if means[best.id] >= means[stack.id]:
            return stack, members
        comparison = self._evaluate_against(best, stack, "stack")
        kept = comparison is not None and comparison.better(self.config.alpha)
        self.evo.event(f"stack re-tuned ({best.mutation['description'][:60]}): {comparison} -> "
                        f"{'kept' if kept else 'left out'}")
        if not kept:
            return stack, members
        atom = self._rebase(best, comparison.mean)
        return best, [*members, Atom(f"tune#{best.id[:8]}", atom.description, best.id, atom.mutation,
                                     comparison.mean, atom.bundled)]

    def _stack_trials(self, stack: Variant) -> tuple[list[Variant], list[int]]:
        """The stack's knob trials (asked once and remembered, so a resumed combine reuses them), and the
        ids of trials that asked for the stack's own values (told with the stack's score)."""
        trials = [v for v in self.evo.variants.values() if v.parents[:1] == (stack.id,) and v.origin == "tune"]
        own = []
        while len(trials) < self.config.stack_trials:
            asked = self.evo.tuner.ask(stack.id, stack.source)
            if asked is None:
                break
            trial_id, source, values = asked
            if source == stack.source:
                own.append(trial_id)
                continue
            variant = self._variant(source, stack, "tune", ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else
                                                                     f"{k}={v}" for k, v in sorted(values.items())))
            if variant.id not in self.evo.trials:
                self.store.link_trial(variant.id, study_name(stack.id), trial_id)
                self.evo.trials[variant.id] = (study_name(stack.id), trial_id)
            if variant not in trials:
                trials.append(variant)
        return trials, own

    # ---------------------------------------------------------------- ablation
    def ablate(self, stack: Variant, members: list[Atom]) -> list[dict]:
        """Add-one from the baseline and leave-one-out from the stack, for every member, at the top rung."""
        pairs = []
        for atom in members:
            alone = self._variant(apply_mutation(self.base_source, atom.mutation), self.baseline, "ablation",
                                  f"only {atom.name}")
            others = [a.mutation for a in members if a is not atom]
            try:
                without = self.baseline if not others else self._variant(
                    apply_mutation(self.base_source, _merge_all(self.base_source, others)), stack, "ablation",
                    f"stack without {atom.name}")
            except MergeConflict:  # the others only merge through this atom: no leave-one-out to measure
                without = None
            pairs.append((atom, alone, without))
        top = self.ladder.top
        work = [(Request(v.id, top.budget, s, purpose="ablation"), v.source)
                for _, alone, without in pairs for v in (alone, without) if v is not None for s in top.seeds]
        self.evaluator.run_all(work)
        rows = []
        for atom, alone, without in pairs:
            add_one = self._top_comparison(alone.id, self.baseline.id)
            leave_one_out = self._top_comparison(stack.id, without.id) if without else None
            rows.append({"atom": atom.name, "description": atom.description, "bundled": atom.bundled,
                         "estimate": atom.estimate, "alone": alone.id, "without": without.id if without else None,
                         "add_one": _dict(add_one), "leave_one_out": _dict(leave_one_out)})
        self.store.set_meta("ablation", rows)
        return rows

    # ---------------------------------------------------------------- test and export
    def test(self, stack: Variant) -> dict | None:
        """The stack against the baseline on the held-out test split, fresh seeds: the reported number."""
        if stack.id == self.baseline.id:
            return None
        seeds = self.ladder.test_seeds(self.config.test_seeds)
        budget = self.ladder.top.budget
        work = [(Request(v.id, budget, s, split="test", purpose="test"), v.source)
                for v in (stack, self.baseline) for s in seeds]
        self.evaluator.run_all(work)
        return _dict(paired(self.evaluator.scores(stack.id, budget, seeds, "test"),
                            self.evaluator.scores(self.baseline.id, budget, seeds, "test")))

    def export(self, stack: Variant) -> dict:
        run_dir = Path(self.config.run_dir)
        (run_dir / "best_train.py").write_text(stack.source)
        (run_dir / "best.patch").write_text(unified_diff(self.base_source, stack.source))
        return {"patch": str(run_dir / "best.patch"), "source": str(run_dir / "best_train.py")}

    # ---------------------------------------------------------------- helpers
    def _variant(self, source: str, parent: Variant, origin: str, description: str) -> Variant:
        mutation = structural_diff(parent.source, source, name=origin, description=description)
        variant, _ = self.store.add_variant(source, knobs=knob_values(source, self.config), parents=(parent.id,),
                                            mutation=mutation.to_dict(), origin=origin)
        self.evo.variants.setdefault(variant.id, variant)
        return self.evo.variants[variant.id]

    def _evaluate_against(self, variant: Variant, reference: Variant, purpose: str) -> Paired | None:
        top = self.ladder.top
        work = [(Request(v.id, top.budget, s, purpose=purpose), v.source) for v in (variant, reference)
                for s in top.seeds]
        self.evaluator.run_all(work)
        return self._top_comparison(variant.id, reference.id)

    def _top_comparison(self, variant: str, reference: str) -> Paired | None:
        top = self.ladder.top
        return paired(self.evaluator.scores(variant, top.budget, top.seeds),
                      self.evaluator.scores(reference, top.budget, top.seeds))

    def _mean(self, variant: str, rung: Rung) -> float | None:
        scores = self.evaluator.scores(variant, rung.budget, rung.seeds)
        return sum(scores.values()) / len(scores) if len(scores) == len(rung.seeds) else None


def _merge_all(base: str, mutations: list[Mutation]) -> Mutation:
    combined = mutations[0]
    for mutation in mutations[1:]:
        combined = merge(base, combined, mutation)
    return combined


def _dict(comparison: Paired | None) -> dict | None:
    return None if comparison is None else comparison.to_dict()

