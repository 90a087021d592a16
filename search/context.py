"""What a strategy may use of a running search: results, variants, atoms, decisions, proposals, events.

The driver builds one `Search` and hands it to the strategy; every write goes through it to
the store, so the driver stays the only writer and a strategy never reaches into the driver.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mutations.edits import Mutation
from mutations.knobs import extract_knobs
from mutations.sources import MutationSource
from population.ladder import Ladder
from population.stats import Paired
from population.store import Decision, DecisionKind, Store, StoredAtom, Variant
from search import children
from search.atoms import Atom
from search.config import EvolveConfig
from search.evaluator import Evaluator, Request
from trainer.budget import Budget
from trainer.result import EvalResult

_STRATEGY_META = "strategy."


def knob_values(source: str, device_kind: str) -> dict:
    """name -> current value of every knob: what a stored variant records beside its source."""
    return {k.name: k.default for k in extract_knobs(source, device_kind)}


@dataclass
class Limits:
    """How far the search may go, as the driver sees it: --time and --compute, --generations."""

    out_of_time: bool = False      # --time or --compute reached
    enough_children: bool = False  # --generations reached
    children: int = 0              # new candidates so far (what --generations counts)
    runs_left: float | None = None  # full-budget runs the limits still allow, as the driver estimates them
    compute_runs: float | None = None  # full-budget runs --compute buys in all, at the driver's cost per run


class Search:
    def __init__(self, config: EvolveConfig, store: Store, evaluator: Evaluator, source: MutationSource,
                 baseline: Variant, ladder: Ladder, variants: dict[str, Variant], limits: Limits,
                 on_event: Callable[[str, bool], None], on_phase: Callable[[str], None], slots: int) -> None:
        self.config, self.ladder, self.baseline = config, ladder, baseline
        self._slots = slots
        self._store, self._evaluator, self._source = store, evaluator, source
        self._variants, self._limits = variants, limits
        self._on_event, self._on_phase = on_event, on_phase
        self.llm_cost = float(store.meta().get("llm_cost_usd", 0.0))

    # ---------------------------------------------------------------- reading
    @property
    def top_budget(self) -> Budget:
        return self.ladder.top.budget

    @property
    def searching(self) -> bool:
        """False once a limit of the search (--time, --compute, --generations) is reached: finish up."""
        return not (self._limits.out_of_time or self._limits.enough_children)

    @property
    def runs_left(self) -> float | None:
        """About how many more full-budget runs the search's limits allow (None: no estimate yet)."""
        return self._limits.runs_left

    @property
    def compute_runs(self) -> float | None:
        """About how many full-budget runs --compute buys in all (None: no --compute, or no estimate yet)."""
        return self._limits.compute_runs

    @property
    def out_of_time(self) -> bool:
        """--time or --compute reached (--generations only stops new candidates; those made may go on)."""
        return self._limits.out_of_time

    def result(self, request: Request) -> EvalResult | None:
        return self._evaluator.result(request)

    def scores(self, variant: str, budget: Budget, seeds=None, split: str = "val") -> dict[int, float]:
        """seed -> val_bpb of the variant's successful evaluations (on these seeds, when given)."""
        return self._evaluator.scores(variant, budget, seeds, split)

    def finished(self) -> list[tuple[Request, EvalResult]]:
        """Every finished evaluation as (request, result), in the order they finished."""
        return self._evaluator.items()

    @property
    def slots(self) -> int:
        """How many evaluations can run at once."""
        return self._slots

    def in_flight(self) -> list[Request]:
        return self._evaluator.in_flight()

    def variant(self, variant_id: str) -> Variant:
        return self._variants[variant_id]

    def variants(self) -> list[Variant]:
        return list(self._variants.values())

    def decisions(self, variant: str | None = None) -> list[Decision]:
        return self._store.decisions(variant)

    def stored_atoms(self) -> list[StoredAtom]:
        return self._store.atoms()

    def trials(self) -> dict[str, tuple[str, int]]:
        """variant id -> (study, Optuna trial id) of every knob-trial variant."""
        return self._store.trials()

    def link_trial(self, variant_id: str, study: str, trial_id: int) -> None:
        self._store.link_trial(variant_id, study, trial_id)

    def recall(self, key: str, default: object = None) -> object:
        """A strategy's own stored state (see remember)."""
        return self._store.meta().get(_STRATEGY_META + key, default)

    # ---------------------------------------------------------------- writing
    def add_variant(self, source: str, *, parents: tuple[str, ...], mutation: Mutation, origin: str,
                    atoms: tuple[str, ...] | None = None) -> tuple[Variant, bool]:
        """The stored variant for this source and whether it is new (the same source is stored once)."""
        variant, new = self._store.add_variant(source, knobs=knob_values(source, self.config.device_kind),
                                               parents=parents, mutation=mutation.to_dict(), origin=origin,
                                               atoms=atoms)
        self._variants.setdefault(variant.id, variant)
        return self._variants[variant.id], new

    def count_child(self) -> None:
        """One more new candidate: what --generations counts."""
        self._limits.children += 1
        self._store.set_meta("children", self._limits.children)

    def add_atom(self, atom: Atom) -> bool:
        prior = None if atom.prior is None else {"mean": atom.prior.mean, "sd": atom.prior.sd}
        return self._store.add_atom(atom.name, atom.mutation.to_dict(), origin=atom.origin,
                                    description=atom.description, prior=prior, requires=atom.requires,
                                    group=atom.group, bundled=atom.bundled)

    def decide(self, variant_id: str, kind: DecisionKind, *, rung: int | None = None, reference: str | None = None,
               comparison: Paired | None = None, reason: str = "", **detail: object) -> None:
        """Record a decision and show it as a line."""
        stored = {"reason": reason, **detail}
        if comparison is not None:
            stored["paired"] = comparison.to_dict()
        self._store.decide(variant_id, kind, rung=rung, reference=reference, detail=stored)
        variant = self._variants[variant_id]
        shown = f" {comparison}" if comparison is not None else ""
        self.event(f"{variant_id[:8]} {variant.origin} {kind.value}{shown}{' - ' + reason if reason else ''}")

    def record_noise(self, noise: dict) -> None:
        """The seed noise decisions are read against ({"sd", "mean", "n", "budget", ...}), for status and the report."""
        self._store.set_meta("noise", noise)

    def noise(self) -> dict | None:
        return self._store.meta().get("noise")

    def remember(self, key: str, value: object) -> None:
        """Keep a piece of strategy state in the store, so a resumed search finds it."""
        self._store.set_meta(_STRATEGY_META + key, value)

    def propose(self, parent: Variant, exclude: frozenset[str] = frozenset()) -> children.Child | None:
        """A validated structural change of `parent` from the mutation source (none of the changes named in
        `exclude`); None when it has nothing more."""
        try:
            child = children.structural(self._source, parent, children.proposal_request(
                parent, self._variants, self._store.decisions(), self.config.direction, exclude))
        except children.NoChild:
            return None
        if child.cost_usd:
            self.llm_cost += child.cost_usd
            self._store.set_meta("llm_cost_usd", self.llm_cost)
        return child

    @property
    def exhaustive_source(self) -> bool:
        """Whether the mutation source's proposals are cheap and finite (the catalog), so all may be asked for."""
        return self._source.exhaustive

    def event(self, line: str, quiet: bool = False) -> None:
        self._on_event(line, quiet)

    def set_phase(self, phase: str) -> None:
        self._on_phase(phase)
