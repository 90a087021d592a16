"""Autoresearch's loop: try one idea at a time on the best so far, keep it if val_bpb went down.

One run per idea, at the full budget, on one fixed seed, one evaluation at a time (autoresearch
trains on one GPU at a time); an idea is kept when its value is lower than the best so far.
Ideas come from the mutation source on top of the current best, ideas never tried anywhere
first; when the source has no new one, the knobs' neighbouring values (x / sqrt(3) and
x * sqrt(3) for rates, a quarter of the range for fractions, a quarter of the value for sizes),
then their further values, then ideas discarded earlier, retried on the new best. It goes on
until the search's limit, so that at equal compute it spends what the others spend.

The honest baseline for the benchmark (benchmarks/search_efficiency.py), and a real choice:
`search evolve --strategy greedy`.
"""
from __future__ import annotations

import random

from mutations.diff import structural_diff
from mutations.knobs import extract_knobs, set_knobs
from population.store import DecisionKind, Variant
from search import ablation
from search.atoms import Atom, knob_grid, neighbours, rebase
from search.evaluator import Request
from search.strategies._base import Outcome, Signal, Strategy
from trainer.errors import UserError
from trainer.result import EvalResult

_NEW_IDEA_TRIES = 8   # proposals asked for before settling for an idea already tried elsewhere


class GreedyStrategy(Strategy):
    name = "greedy"

    def __init__(self, search) -> None:
        super().__init__(search)
        self.rng = random.Random(search.config.seed)
        self.seed = search.ladder.top.seeds[0]
        self.current = search.baseline
        self.best: float | None = None
        self.kept: list[Variant] = []
        self.tried: set[str] = set()      # names of every idea tried, on any parent
        self.retries: list[Variant] = []  # ideas of a tried name, kept for when nothing new is left
        self.pending: Variant | None = None
        self._restore()

    def _restore(self) -> None:
        """The current best and what was tried, from the decisions and variants in the store."""
        judged = {d.variant_id for d in self.search.decisions() if d.kind in (DecisionKind.ACCEPTED,
                                                                               DecisionKind.REJECTED,
                                                                               DecisionKind.FAILED)}
        for decision in self.search.decisions():
            if decision.kind == DecisionKind.ACCEPTED:
                self.kept.append(self.search.variant(decision.variant_id))
        if self.kept:
            self.current = self.kept[-1]
        self.best = self._value(self.current)
        for variant in self.search.variants():
            if variant.origin not in ("baseline", "ablation") and variant.parents:
                self.tried.add(_idea(variant))
                if variant.id not in judged and variant.parents[0] == self.current.id:
                    self.pending = variant  # asked before the search stopped: run it again

    # ---------------------------------------------------------------- ask / tell
    def ask(self) -> Request | Signal:
        if self.search.in_flight():
            return Signal.WAIT
        if self.best is None:
            return self._request(self.current)
        if not self.search.searching:
            return Signal.DONE
        if self.pending is None:
            self.pending = self._next_idea()
            if self.pending is None:
                return Signal.DONE
        return self._request(self.pending)

    def tell(self, request: Request, result: EvalResult) -> None:
        if request.variant == self.current.id and self.best is None:
            if not result.status.is_ok():
                raise UserError(f"the baseline failed ({result.status.value}: {result.message}); see its log under "
                                f"{self.search.config.run_dir}/logs")
            self.best = result.val_bpb
            return
        variant = self.search.variant(request.variant)
        self.pending = None
        if not result.status.is_ok():
            self.search.decide(variant.id, DecisionKind.FAILED, reference=self.current.id,
                               reason=f"{result.status.value}: {result.message}")
        elif result.val_bpb < self.best:
            self.search.decide(variant.id, DecisionKind.ACCEPTED, reference=self.current.id,
                               reason=f"{result.val_bpb:.4f} < best {self.best:.4f}", delta=result.val_bpb - self.best)
            self.current, self.best = variant, result.val_bpb
            self.kept.append(variant)
        else:
            self.search.decide(variant.id, DecisionKind.REJECTED, reference=self.current.id,
                               reason=f"{result.val_bpb:.4f} >= best {self.best:.4f}", delta=result.val_bpb - self.best)

    def incumbent(self) -> str:
        return self.current.id

    def outcome(self) -> Outcome:
        """The best so far, and its kept changes as atoms: a knob moved twice counts once, with its last value;
        a change undone later (a knob back at its baseline value) not at all."""
        base = self.search.baseline.source
        atoms: dict[str, Atom] = {}
        estimates = {}
        for variant in self.kept:
            parent = self.search.variant(variant.parents[0])
            key = _idea(variant) if variant.origin == "knob" else variant.id
            previous = atoms.pop(key, None)
            mutation, bundled = rebase(base, parent.source, variant.source) if previous is None else \
                (structural_diff(base, set_knobs(base, _knob_values(variant, parent, self.search.config.device_kind),
                                                 self.search.config.device_kind)), False)
            if not mutation.edits:
                continue
            name = f"{_idea(variant)}#{variant.id[:8]}"
            atoms[key] = Atom(name, mutation.named(name), variant.origin,
                              (variant.mutation or {}).get("description", ""), bundled=bundled)
            estimates[name] = self._value(variant) - self._value(parent)
        members = ablation.variants(self.search, list(atoms.values()), self.current)
        return Outcome(self.current.id, ablation.rows(self.search, self.current, members, estimates))

    # ---------------------------------------------------------------- ideas
    def _next_idea(self) -> Variant | None:
        """A new idea from the source, else a knob move, else an idea tried before on another best."""
        for _ in range(_NEW_IDEA_TRIES):
            child = self.search.propose(self.current)
            if child is None:
                break
            if child.refusal:
                continue
            variant, new = self.search.add_variant(child.source, parents=(self.current.id,), mutation=child.mutation,
                                                   origin=child.origin)
            if not new:
                continue
            self.search.count_child()
            if _idea(variant) not in self.tried:
                self.tried.add(_idea(variant))
                return variant
            self.retries.append(variant)
        knob = self._knob_move()
        if knob is not None:
            return knob
        while self.retries:
            variant = self.retries.pop(0)
            if variant.parents[0] == self.current.id:
                return variant
        return None

    def _knob_move(self) -> Variant | None:
        """A knob of the best so far at another value: its neighbours first (x / sqrt(3), x * sqrt(3), a quarter of
        the range), in random order, then the rest of its grid, nearest first, so the loop never runs dry."""
        device = self.search.config.device_kind
        knobs = extract_knobs(self.current.source, device)
        near = [(knob, value) for knob in knobs for value in neighbours(knob)]
        self.rng.shuffle(near)
        further = sorted(((knob, value, abs(position)) for knob in knobs for value, position in knob_grid(knob)),
                         key=lambda item: item[2])
        for knob, value in near + [(knob, value) for knob, value, _ in further]:
            try:
                source = set_knobs(self.current.source, {knob.name: value}, device)
            except UserError:
                continue
            description = f"{knob.name} {knob.default} -> {value}"
            mutation = structural_diff(self.current.source, source, f"knob:{knob.name}", description)
            variant, new = self.search.add_variant(source, parents=(self.current.id,), mutation=mutation,
                                                   origin="knob")
            if new:
                self.search.count_child()
                self.tried.add(_idea(variant))
                return variant
        return None

    def _request(self, variant: Variant) -> Request:
        return Request(variant.id, self.search.top_budget, self.seed, purpose="search")

    def _value(self, variant: Variant) -> float | None:
        return self.search.scores(variant.id, self.search.top_budget, [self.seed]).get(self.seed)


def _knob_values(variant: Variant, parent: Variant, device: str) -> dict:
    """The knob values a knob move set (those that differ from its parent's)."""
    before = {k.name: k.default for k in extract_knobs(parent.source, device)}
    return {k.name: k.default for k in extract_knobs(variant.source, device) if before.get(k.name) != k.default}


def _idea(variant: Variant) -> str:
    """What an idea is, across parents: the catalog move or the knob it changes, or the LLM change's own name."""
    return (variant.mutation or {}).get("name") or variant.origin
