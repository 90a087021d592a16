"""The successive-halving strategy's last stage: its accepted changes as atoms, stacked greedily, re-tuned, ablated.

1. Each accepted variant's own change (relative to the parent it beat) is rebased onto the
   baseline (search/atoms.py); a change that cannot be separated from its ancestors stays
   bundled with them.
2. Atoms are stacked in order of their measured effect; each addition is kept only if the new
   stack beats the current one on the one-sided paired test at the top rung.
3. The stack's knobs get a few Optuna trials at the rung below the top; the best is kept if it
   beats the stack at the top rung.
4. Ablation at the top rung: every atom alone on the baseline (add-one) and the stack with each
   atom left out (leave-one-out).

Written as a Steps program (search/strategies/_base.py): each `yield` runs a batch; every step is
a pure function of stored evaluations, so a resumed combine re-derives the same decisions and
only runs what is missing.
"""
from __future__ import annotations

from optuna.trial import TrialState

from mutations.diff import structural_diff
from mutations.edits import apply_mutation
from mutations.knobs import extract_knobs, set_knobs
from mutations.merge import MergeConflict, merge
from population.ladder import Rung
from population.stats import Paired, accepts, paired
from population.store import DecisionKind, Variant
from search import ablation
from search.atoms import Atom, rebase
from search.context import Search
from search.evaluator import Request
from search.knob_tuning import KnobTuner, study_name
from search.strategies._base import Outcome, Program
from trainer.errors import UserError


class Combiner:
    def __init__(self, search: Search, tuner: KnobTuner, trials: dict[str, tuple[str, int]]) -> None:
        self.search, self.tuner, self.trials = search, tuner, trials
        self.config, self.ladder, self.baseline = search.config, search.ladder, search.baseline
        self.estimates: dict[str, float] = {}

    def run(self) -> Program:
        atoms = self.atoms()[:self.config.combine_max]
        self.search.event(f"combine: {len(atoms)} atoms " + ", ".join(f"{a.name} ({self.estimates[a.name]:+.4f})"
                                                                       for a in atoms))
        stack, members, steps = yield from self.stack(atoms)
        stack, members = yield from self.retune(stack, members)
        pairs = ablation.variants(self.search, members, stack)
        top = self.ladder.top
        yield [Request(v.id, top.budget, s, purpose="ablation") for _, alone, without in pairs
               for v in (alone, without) if v is not None for s in top.seeds]
        return Outcome(stack.id, ablation.rows(self.search, stack, pairs, self.estimates), {"steps": steps})

    # ---------------------------------------------------------------- atoms
    def atoms(self) -> list[Atom]:
        decisions = self.search.decisions()
        out = {d.variant_id for d in decisions if d.kind == DecisionKind.RETIRED}
        accepted = [d for d in decisions if d.kind == DecisionKind.ACCEPTED and d.variant_id != self.baseline.id
                    and d.variant_id not in out]
        atoms, seen = [], set()
        for decision in accepted:
            variant = self.search.variant(decision.variant_id)
            if variant.origin in ("merge", "stack"):
                continue  # a merge's changes are its parents' atoms
            atom = self._atom(variant, Paired.from_dict(decision.detail["paired"]).mean)
            if atom.mutation.key not in seen and atom.mutation.edits:
                seen.add(atom.mutation.key)
                atoms.append(atom)
        return sorted(atoms, key=lambda a: self.estimates[a.name])

    def _atom(self, variant: Variant, estimate: float) -> Atom:
        parent = self.search.variant(variant.parents[0])
        mutation = variant.mutation or {}
        name = f"{mutation.get('name') or variant.origin}#{variant.id[:8]}"
        description = mutation.get("description", "")
        self.estimates[name] = estimate
        if variant.origin == "tune" and parent.id != self.baseline.id:
            tuned = self._knobs_on_baseline(parent, variant)
            if tuned is not None:
                return Atom(name, structural_diff(self.baseline.source, tuned, name), "tune", description)
        change, bundled = rebase(self.baseline.source, parent.source, variant.source)
        return Atom(name, change.named(name), variant.origin,
                    description + (" (with its ancestors' changes)" if bundled else ""), bundled=bundled)

    def _knobs_on_baseline(self, parent: Variant, child: Variant) -> str | None:
        """A knob trial's values set on the baseline's own knobs: its change, whatever else the parent changed
        to the same constants. None when none of the knobs it moved exists in the baseline."""
        device = self.config.device_kind
        before = {k.name: k.default for k in extract_knobs(parent.source, device)}
        after = {k.name: k.default for k in extract_knobs(child.source, device)}
        ours = {k.name for k in extract_knobs(self.baseline.source, device)}
        moved = {k: v for k, v in after.items() if k in ours and before.get(k) != v}
        try:
            return set_knobs(self.baseline.source, moved, device) if moved else None
        except UserError:  # the values break a constraint of the baseline (a divisor, say)
            return None

    # ---------------------------------------------------------------- stacking
    def stack(self, atoms: list[Atom]):
        stack, stack_mutation, members, steps = self.baseline, None, [], []
        for atom in atoms:
            try:
                mutation = atom.mutation if stack_mutation is None else merge(self.baseline.source, stack_mutation,
                                                                              atom.mutation)
            except MergeConflict as conflict:
                steps.append({"atom": atom.name, "kept": False, "reason": f"conflicts with the stack: {conflict}"})
                continue
            candidate = self._variant(apply_mutation(self.baseline.source, mutation), stack, "stack",
                                      f"+ {atom.name}", tuple(a.name for a in members) + (atom.name,))
            comparison = yield from self._against(candidate, stack)
            kept = accepts(comparison, self.config.alpha)
            steps.append({"atom": atom.name, "variant": candidate.id, "kept": kept, "paired": _dict(comparison)})
            self.search.event(f"stack + {atom.name}: {comparison} -> {'kept' if kept else 'left out'}")
            if kept:
                stack, stack_mutation = candidate, mutation
                members.append(atom)
        return stack, members, steps

    def retune(self, stack: Variant, members: list[Atom]):
        """A few knob trials on the stack at the rung below the top; the best must beat it at the top."""
        if not members or self.config.stack_trials <= 0:
            return stack, members
        rung = self.ladder.rungs[-2] if len(self.ladder.rungs) > 1 else self.ladder.top
        trials, own = self._stack_trials(stack)
        yield [Request(v.id, rung.budget, s, purpose="stack tune") for v in [stack, *trials] for s in rung.seeds]
        means = {v.id: self._mean(v.id, rung) for v in [stack, *trials]}
        told = [(self.trials[v.id][1], means[v.id]) for v in trials] + [(t, means[stack.id]) for t in own]
        for trial_id, value in told:
            self.tuner.tell(trial_id, TrialState.COMPLETE if value is not None else TrialState.FAIL, value)
        scored = [v for v in trials if means[v.id] is not None]
        if not scored or means[stack.id] is None:
            return stack, members
        best = min(scored, key=lambda v: means[v.id])
        if means[best.id] >= means[stack.id]:
            return stack, members
        comparison = yield from self._against(best, stack)
        kept = accepts(comparison, self.config.alpha)
        self.search.event(f"stack re-tuned ({best.mutation['description'][:60]}): {comparison} -> "
                          f"{'kept' if kept else 'left out'}")
        if not kept:
            return stack, members
        atom = self._atom(best, comparison.mean)
        return best, [*members, atom]

    def _stack_trials(self, stack: Variant) -> tuple[list[Variant], list[int]]:
        """The stack's knob trials (asked once and remembered, so a resumed combine reuses them), and the
        ids of trials that asked for the stack's own values (told with the stack's score)."""
        trials = [v for v in self.search.variants() if v.parents[:1] == (stack.id,) and v.origin == "tune"]
        own = []
        while len(trials) < self.config.stack_trials:
            asked = self.tuner.ask(stack.id, stack.source)
            if asked is None:
                break
            trial_id, source, values = asked
            if source == stack.source:
                own.append(trial_id)
                continue
            variant = self._variant(source, stack, "tune", ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else
                                                                     f"{k}={v}" for k, v in sorted(values.items())))
            if variant.id not in self.trials:
                self.search.link_trial(variant.id, study_name(stack.id), trial_id)
                self.trials[variant.id] = (study_name(stack.id), trial_id)
            if variant not in trials:
                trials.append(variant)
        return trials, own

    # ---------------------------------------------------------------- helpers
    def _variant(self, source: str, parent: Variant, origin: str, description: str,
                 atoms: tuple[str, ...] | None = None) -> Variant:
        mutation = structural_diff(parent.source, source, name=origin, description=description)
        variant, _ = self.search.add_variant(source, parents=(parent.id,), mutation=mutation, origin=origin,
                                             atoms=atoms)
        return variant

    def _against(self, variant: Variant, reference: Variant):
        top = self.ladder.top
        yield [Request(v.id, top.budget, s, purpose="stack") for v in (variant, reference) for s in top.seeds]
        return paired(self.search.scores(variant.id, top.budget, top.seeds),
                      self.search.scores(reference.id, top.budget, top.seeds))

    def _mean(self, variant: str, rung: Rung) -> float | None:
        scores = self.search.scores(variant, rung.budget, rung.seeds)
        return sum(scores.values()) / len(scores) if len(scores) == len(rung.seeds) else None


def _dict(comparison: Paired | None) -> dict | None:
    return None if comparison is None else comparison.to_dict()
