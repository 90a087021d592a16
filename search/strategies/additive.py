"""The default strategy: one Bayesian model of additive effects over every evaluation, Thompson sampling over stacks.

Every variant is the baseline plus a stack of atoms: code changes rebased onto the baseline
(search/atoms.py; with the catalog, every move that applies, and the moves that build on another
once that one has run) and knob levels (each tunable knob over a grid of values, one group per
knob, its levels on one smooth prior curve). Every full-budget run, on any seed, is one
observation of one model (population/additive.py): a run teaches it about every atom it holds,
and seeds pair for free. Each time a slot frees:

1. The model is fitted to every run so far and one set of effects is drawn from its posterior
   (Thompson sampling); the best stack under that draw is found within the atoms' conflicts,
   requirements and groups (search/stacks.py). The stack may hold any change not tried yet,
   at its prior: the catalog's measured effect, an LLM's stated one, else "probably does not
   help"; and any knob level next to the baseline's value or to a level tried (knobs move out
   step by step). With an LLM, its next change stands in as a placeholder and is asked for,
   on top of the incumbent, when a draw picks it.
2. A stack never run runs, once, at the full budget: one run decides a clear case.
3. A stack that ran already races its closest competitor (the neighbour most likely to beat it):
   the competitor runs on the stack's seeds, then both get more seeds while the posterior cannot
   separate them. Once nothing is close, the least-settled neighbour runs.

There is no upfront noise phase: the noise is what the model's residuals and replicates say.
When the search's limit is reached (under --compute, when only the confirmation runs are left),
the answer is the posterior-best stack of tried atoms, without those the model believes help
there with a probability under KEEP. A few confirmation runs test its least certain members by
leaving each out, on seeds the stack ran on; the model takes them in and the answer is read
again. The ablation (add-one, leave-one-out) comes from the model, checked by those runs.
"""
from __future__ import annotations

import numpy as np

from mutations.knobs import Knob, extract_knobs
from mutations.sources import Expectation
from population import additive
from population.additive import Curve, Observation, Posterior, Prior
from population.store import DecisionKind, Variant
from search import ablation
from search.atoms import KNOB_PREFIX, Atom, Atoms, curve_length, knob_atoms, knob_grid, rebase
from search.children import Child
from search.evaluator import Request
from search.snapshot import MemberView
from search.stacks import best_stack, flips
from search.strategies._base import Outcome, Program, Signal, Steps, Strategy, View
from search.strategies.screening import Screen
from trainer.errors import UserError
from trainer.result import EvalResult

SCALE_SHARE = 0.03      # an effect's prior sd without an expectation: 3% of the baseline's val_bpb (catalog
                        # effects on the CPU baseline: 0.04-0.49 of 3.67; GPU changes of 1e-3 are well inside it)
NOISE_SHARE = 0.0015    # the noise guessed before any replicate: 0.15% (the CPU baseline's seed sd 0.0055 at 300k)
KNOB_SHARE = 0.5        # a knob's level one step from the baseline moves val_bpb less than a code change
UNMEASURED_MEAN = 1.0   # a change nobody measured is expected to hurt by one scale: P(it helps) = 16% before any
                        # run, so the first stacks hold a few untried changes, not half of them (synthetic benchmark:
                        # regret at 36 runs, noise 0.03, 0.051 -> 0.034; false keeps 1.8 -> 0.7 per task)
FOREIGN_WEIGHT = 0.3    # a catalog effect measured on another baseline, device or budget: a third of its size
STATED_WEIGHT = 0.5     # an LLM's stated effect: half of it (stated effects run optimistic)
KEEP = 0.8              # the answer keeps an atom the model believes helps there with at least this probability
BUILD_ON = 0.5          # new changes go on top of the stack of atoms more likely to help than not
SETTLED = 0.05          # a competitor less likely than this to be better needs no more runs
CONFIDENT = 0.99        # confirmation runs go to members the model is less sure of than this
CONFIRM_SHARE = 0.15    # under --compute, the confirmation runs take at most this share of it
NEW = "<new change>"    # the next change an LLM would propose, before it is asked for


class AdditiveStrategy(Strategy):
    name = "additive"
    default_ladder = ((1.0,), (4,))   # the full budget only, seeds rotating over 4; a lower rung screens (screening.py)

    def __init__(self, search) -> None:
        super().__init__(search)
        config = search.config
        self.rng = np.random.default_rng(config.seed)
        self.budget = search.top_budget
        self.seeds = search.ladder.top.seeds
        self.base = search.baseline
        self.screen = Screen(search, search.ladder.rungs[0]) if len(search.ladder.rungs) > 1 else None
        self.atoms = Atoms(self.base.source)
        self.knobs: dict[str, Knob] = {k.name: k for k in extract_knobs(self.base.source, config.device_kind)}
        self.dead: set[str] = set()                  # atoms whose runs failed
        self.forbidden: set[frozenset[str]] = set()  # stacks that failed with several new atoms at once
        self.source_done = False                     # the mutation source has nothing more to offer
        self._fitted: tuple[int, int, int] | None = None
        self._posterior: Posterior | None = None
        self._final: Steps | None = None
        self._answer: frozenset[str] | None = None
        for stored in search.stored_atoms():
            self.atoms.add(Atom(stored.name, _mutation(stored.mutation), stored.origin, stored.description,
                                None if stored.prior is None else Prior(stored.prior["mean"], stored.prior["sd"]),
                                stored.requires, stored.group, stored.bundled))
        if not any(a.origin == "knob" for a in self.atoms):
            for atom, _ in knob_atoms(self.base.source, config.device_kind):
                self._add(atom)
        self.positions = {f"{KNOB_PREFIX}{knob.name}={_shown(value)}": position
                          for knob in self.knobs.values() for value, position in knob_grid(knob)}
        for request, result in search.finished():
            if not result.status.is_ok():
                self._blame(request, result, quiet=True)

    # ================================================================ ask / tell
    def ask(self) -> Request | Signal:
        if self._final is not None:
            return self._final.ask()
        if not self.search.searching or self._reserved():
            self.search.set_phase("confirm")
            self._final = Steps(self.search, self._confirm())
            return self._final.ask()
        if not self._observed(frozenset()):
            return self._run(frozenset()) if not self._running(frozenset()) else Signal.WAIT
        self._enumerate()
        posterior = self._fit()
        promoted = self._screened(posterior)
        if promoted is not None:
            return promoted
        chosen = best_stack(posterior.draw(self.rng), self._pool(), self.atoms, self.forbidden | self._in_screen())
        if chosen - self._active():
            tried = self._try(chosen)
            if tried is not None:
                return tried
        return self._choose(chosen & self._active(), posterior)

    def _reserved(self) -> bool:
        """Under --compute, the confirmation runs come out of the same compute: stop searching when only they are
        left (at most CONFIRM_SHARE of it)."""
        left = self.search.runs_left
        if not self.search.config.compute or left is None:
            return False
        return left <= self._confirm_runs()

    def _confirm_runs(self) -> int:
        config, runs = self.search.config, self.search.compute_runs
        return config.confirm_runs if runs is None else min(config.confirm_runs, int(CONFIRM_SHARE * runs))

    def tell(self, request: Request, result: EvalResult) -> None:
        if request.variant == self.base.id and not result.status.is_ok():
            raise UserError(f"the baseline failed ({result.status.value}: {result.message}); see its log under "
                            f"{self.search.config.run_dir}/logs/{self.base.id}")
        if not result.status.is_ok():
            self._blame(request, result)

    def incumbent(self) -> str:
        return self._variant(self._best(self._fit())).id

    def outcome(self) -> Outcome:
        posterior = self._fit()
        answer = self._answer if self._answer is not None else self._best(posterior)
        stack = self._variant(answer)
        members = [self.atoms.by_name[a] for a in sorted(answer, key=lambda a: posterior.effect(a)[0])]
        model = {}
        for atom in members:
            without = answer - self._dependents(atom.name, answer)
            model[atom.name] = {"add_one": _interval(*posterior.effect(atom.name)),
                                "leave_one_out": _interval(*posterior.contrast(answer, without)),
                                "p_helps": posterior.prob_better(answer, without)}
        rows = ablation.rows(self.search, stack, ablation.variants(self.search, members, stack),
                             {a: m["leave_one_out"]["mean"] for a, m in model.items()}, model)
        estimate = posterior.contrast(answer)
        return Outcome(stack.id, rows, {"estimate": _interval(*estimate), "noise_sd": posterior.noise_sd})

    def view(self) -> View:
        if self._posterior is None or not self._observed(frozenset()):
            return View()
        posterior = self._posterior
        stacks = {}
        for request, result in self.search.finished():
            stack = self._stack_of(request.variant)
            if stack is not None and request.split == "val" and request.budget == self.budget \
                    and result.status.is_ok() and stack not in stacks:
                stacks[stack] = request.variant
        ranked = sorted(stacks, key=lambda s: posterior.contrast(s)[0])[:self.search.config.population]
        members = []
        for stack in ranked:
            mean, sd = posterior.contrast(stack)
            scores = self.search.scores(stacks[stack], self.budget)
            members.append(MemberView(stacks[stack][:8], "stack", " + ".join(_short(a) for a in sorted(stack))[:80]
                                      or "the baseline", sum(scores.values()) / len(scores), mean, mean - 1.96 * sd,
                                      mean + 1.96 * sd, len(scores)))
        return View(population=members, noise=self.search.noise(), fidelity=self.search.recall("fidelity", []))

    # ================================================================ the model
    def _observations(self) -> list[Observation]:
        found = []
        for request, result in self.search.finished():
            if request.split != "val" or request.budget != self.budget or not result.status.is_ok():
                continue
            stack = self._stack_of(request.variant)
            if stack is not None:
                found.append(Observation(stack, str(request.budget), request.seed, result.val_bpb))
        return found

    def _fit(self) -> Posterior:
        """The posterior over the atoms tried so far, those waiting and every knob level (at their prior); cached
        per state. The levels of a knob share one smooth curve (population/additive.py, Curve)."""
        observations = self._observations()
        names = self._pool() | self._active()
        state = (len(observations), len(self.atoms), hash(frozenset(names)))
        if state != self._fitted:
            level = float(np.mean([o.value for o in observations if not o.stack] or [o.value for o in observations]))
            scale = SCALE_SHARE * abs(level)
            priors = {name: self._prior(name, scale) for name in names}
            curves = [Curve({a: self.positions[a] for a in levels if a in names},
                            curve_length(self.knobs[group.removeprefix(KNOB_PREFIX)]))
                      for group, levels in self._levels().items()]
            self._posterior = additive.fit(observations, priors, scale, NOISE_SHARE * abs(level), curves=curves)
            if state[0] != (self._fitted or (0,))[0]:
                self.search.record_noise({"sd": self._posterior.noise_sd, "mean": level, "n": len(observations),
                                          "budget": str(self.budget), "from": "the model's residuals and replicates"})
            self._fitted = state
        return self._posterior

    def _prior(self, name: str, scale: float) -> Prior:
        if name == NEW:
            return Prior(self._new_change_mean(), scale)
        atom = self.atoms.by_name[name]
        if atom.prior is not None:
            return Prior(atom.prior.mean, max(atom.prior.sd or 0.0, 0.1 * scale))
        if atom.origin == "knob":
            return Prior(0.0, KNOB_SHARE * scale)
        return Prior(UNMEASURED_MEAN * scale, scale)  # a change nobody measured: most such changes do not help

    def _new_change_mean(self) -> float:
        """What the source's next change is expected to do: its earlier changes' mean effect, shrunk towards 0."""
        posterior = self._posterior
        proposed = [a.name for a in self.atoms if a.origin not in ("knob",) and a.name in self._active()]
        if posterior is None or not proposed:
            return 0.0
        effects = [posterior.effect(a)[0] for a in proposed if a in posterior.atoms]
        return sum(effects) / (len(effects) + 2)

    def _best(self, posterior: Posterior, keep: float | None = None) -> frozenset[str]:
        """The answer now: the posterior-best stack of tried atoms, without the members less likely than `keep` to
        help there (the least likely first, one at a time)."""
        keep = KEEP if keep is None else keep
        stack = best_stack(posterior.expected(), self._observed_atoms(), self.atoms, self.forbidden)
        while stack:
            doubts = {a: posterior.prob_better(stack, stack - self._dependents(a, stack)) for a in stack}
            worst = min(doubts, key=doubts.get)
            if doubts[worst] >= keep:
                break
            stack = stack - self._dependents(worst, stack)
        return stack

    # ================================================================ choosing a run
    def _choose(self, stack: frozenset[str], posterior: Posterior) -> Request | Signal:
        """Run a stack the draw favours; once it ran, race it against its closest competitor."""
        if not self._seeds_of(stack):
            return self._run(stack)
        rival, chance = self._closest(stack, posterior)
        if rival is not None and chance >= SETTLED:
            mine, theirs = self._seeds_of(stack), self._seeds_of(rival)
            if len(theirs) < len(self.seeds) and len(theirs) <= len(mine):
                return self._run(rival, prefer=mine)
            if len(mine) < len(self.seeds):
                return self._run(stack, prefer=theirs)
        return self._explore(stack, posterior)

    def _closest(self, stack: frozenset[str], posterior: Posterior) -> tuple[frozenset[str] | None, float]:
        """The neighbour most likely to beat the stack, and that probability."""
        neighbours_ = [n for n in flips(stack, self._observed_atoms(), self.atoms) if n not in self.forbidden]
        if not neighbours_:
            return None, 0.0
        chances = [(posterior.prob_better(n, stack), n) for n in neighbours_]
        chance, rival = max(chances, key=lambda item: item[0])
        return rival, chance

    def _explore(self, stack: frozenset[str], posterior: Posterior) -> Request | Signal:
        """Nothing is close: the least-settled neighbour of the stack (a change it lacks, added or taken out)."""
        pool = self._pool()
        options = [n for n in flips(stack, pool, self.atoms) if n not in self.forbidden]
        untried = [n for n in options if not self._seeds_of(n)]
        if untried:
            return self._run(max(untried, key=lambda n: posterior.prob_better(n, stack)), prefer=self._seeds_of(stack))
        fewer = [n for n in options + [stack] if len(self._seeds_of(n)) < len(self.seeds)]
        if fewer:
            return self._run(min(fewer, key=lambda n: len(self._seeds_of(n))))
        return Signal.WAIT if self.search.in_flight() else Signal.DONE

    def _run(self, stack: frozenset[str], prefer: set[int] = frozenset(), purpose: str = "search") -> Request:
        """A run of the stack on a seed it has not run on: one the compared stack ran on if any, else the seed with
        the fewest runs so far."""
        used = self._seeds_of(stack)
        if purpose == "search" and not used and stack and self.screen is not None and self.screen.active:
            variant = self._variant(stack).id
            if not self.screen.screened(variant):
                request = self.screen.request(variant, self._variant(self._best(self._fit(), BUILD_ON)).id)
                if request is not None:
                    return request
        free = [s for s in self.seeds if s not in used]
        if not free:
            raise RuntimeError(f"stack {sorted(stack)} ran on every seed already")
        counts = {s: 0 for s in self.seeds}
        for request, _ in self.search.finished():
            if request.seed in counts and request.split == "val":
                counts[request.seed] += 1
        paired = [s for s in free if s in prefer]
        seed = min(paired or free, key=lambda s: (counts[s], s))
        if purpose in ("search", "promoted") and not used:
            self.search.count_child()
        shown = "search" if purpose == "promoted" else purpose
        return Request(self._variant(stack).id, self.budget, seed, purpose=shown)

    def _in_screen(self) -> set[frozenset[str]]:
        """Stacks whose short run is running or waits for its verdict: not to be picked again meanwhile."""
        if self.screen is None:
            return set()
        found = set()
        for variant in self.search.variants():
            stack = self._stack_of(variant.id)
            if stack and self.screen.pending(variant.id):
                found.add(stack)
        return found

    def _screened(self, posterior: Posterior) -> Request | None:
        """The full run of a stack whose short run passed the screen; those that failed it are not run again."""
        if self.screen is None:
            return None
        self.search.remember("fidelity", self.screen.measure(self.search.ladder.top))
        decided = {d.variant_id for d in self.search.decisions() if d.kind in (DecisionKind.PROMOTED,
                                                                             DecisionKind.REJECTED)}
        reference = self._variant(self._best(posterior, BUILD_ON)).id
        for request, _ in self.search.finished():
            stack = self._stack_of(request.variant)
            if request.purpose != "screen" or stack is None or self._seeds_of(stack) or request.variant == reference:
                continue
            if request.variant in decided:
                verdict = any(d.kind == DecisionKind.PROMOTED for d in self.search.decisions(request.variant))
            else:
                verdict = self.screen.verdict(request.variant, reference, 2 * posterior.noise_sd)
            if verdict is False:
                self.forbidden.add(stack)
            elif verdict is True and not any(r.variant == request.variant for r in self.search.in_flight()):
                return self._run(stack, purpose="promoted")
        return None

    # ================================================================ new changes
    def _levels(self) -> dict[str, list[str]]:
        """knob group -> its levels that can still run, from the lowest value to the highest."""
        found: dict[str, list[str]] = {}
        for atom in self.atoms:
            if atom.origin == "knob" and atom.name not in self.dead:
                found.setdefault(atom.group, []).append(atom.name)
        return {group: sorted(levels, key=self.positions.__getitem__) for group, levels in found.items()}

    def _nearest(self, levels: list[str], tried: list[str]) -> list[str]:
        """The levels next to the baseline's value and to each tried level: a knob is explored step by step
        outwards (a smooth prior would otherwise send every first try to the far ends, where it is least sure)."""
        anchors = [p for p in (self.positions[t] for t in tried)] + [0.0]
        near = set()
        for anchor in anchors:
            below = [lv for lv in levels if self.positions[lv] < anchor]
            above = [lv for lv in levels if self.positions[lv] > anchor]
            near.update(below[-1:] + above[:1])
        return [lv for lv in levels if lv in near or lv in tried]

    def _pool(self) -> set[str]:
        """What a stack may hold now: every change whose requirements have run (an LLM's next one as a placeholder
        while the source proposes one at a time), and each knob's levels next to its baseline value and to the
        levels already tried."""
        active = self._active()
        found = {a.name for a in self.atoms if a.origin != "knob" and a.name not in self.dead and a.name != NEW
                 and self.atoms.closure([a.name]) - {a.name} <= active}
        for group, levels in self._levels().items():
            found.update(self._nearest(levels, [lv for lv in levels if lv in active]))
        if self.search.searching and not self.search.exhaustive_source and not self.source_done:
            if NEW not in self.atoms:
                self.atoms.add(Atom(NEW, _mutation({"edits": []}), "llm"))
            found.add(NEW)
        return found

    def _try(self, stack: frozenset[str]) -> Request | None:
        """A stack holding changes never tried (an LLM's next one is asked for now); None when it cannot run."""
        if NEW in stack:
            atom = self._propose(self._best(self._fit(), BUILD_ON))
            stack = stack - {NEW}
            if atom is not None:
                keep = {a for a in stack if self.atoms.compatible(a, atom.name)}
                group = atom.group
                stack = frozenset(a for a in keep if not group or self.atoms.by_name[a].group != group)
                stack = stack | self.atoms.closure([atom.name])
        fresh = stack - self._active()
        if not fresh or stack in self.forbidden or self._seeds_of(stack):
            return None
        if self.atoms.source(stack) is None:  # the atoms merge pairwise but not all together
            self.forbidden.add(stack)
            return None
        self.search.event(f"trying {', '.join(_short(a) for a in sorted(fresh))} in a stack of {len(stack)}")
        return self._run(stack)

    def _propose(self, context: frozenset[str]) -> Atom | None:
        """A change from the source on top of the stack, rebased onto the baseline as a new atom."""
        parent = self._variant(context)
        child = self.search.propose(parent, exclude=frozenset(self.atoms.by_name))
        if child is None:
            self.source_done = True
            return None
        if child.refusal:
            self.search.event(f"{child.origin} refused: {child.refusal.splitlines()[0][:120]}")
            return None
        return self._atom_of(child, context)

    def _enumerate(self) -> None:
        """With a cheap source (the catalog), every change it offers becomes a candidate at once: on the baseline,
        and on each member of the incumbent (a move that builds on another, such as Muon's momentum warm-up)."""
        if not self.search.exhaustive_source:
            return
        done = set(map(tuple, self.search.recall("enumerated", [])))
        contexts = [frozenset()] + [frozenset([a]) for a in sorted(self._best(self._fit()))
                                    if self.atoms.by_name[a].origin != "knob"] if done else [frozenset()]
        for context in contexts:
            if tuple(sorted(context)) in done:
                continue
            while (child := self.search.propose(self._variant(context), exclude=frozenset(self.atoms.by_name))):
                if not child.refusal:
                    self._atom_of(child, context, needs_context=bool(context))
                elif child.mutation.name:
                    self.dead.add(child.mutation.name)
                    self.atoms.add(Atom(child.mutation.name, child.mutation, child.origin, "refused"))
            done.add(tuple(sorted(context)))
            self.search.remember("enumerated", sorted(done))

    def _atom_of(self, child: Child, context: frozenset[str], needs_context: bool = False) -> Atom | None:
        """The child's change as an atom: rebased onto the baseline, or, when it cannot be separated from the
        stack it was proposed on, carrying that stack's changes; it requires that stack's atoms then, and when it
        only applies on top of them (`needs_context`: a move built on another, such as Muon's warm-up)."""
        mutation, bundled = rebase(self.base.source, self.atoms.source(context), child.source)
        name = child.mutation.name or child.origin
        if name in self.atoms:
            name = f"{name}#{mutation.key[:8]}"
        if not mutation.edits or self.atoms.with_key(mutation.key) is not None:
            return None
        atom = Atom(name, mutation.named(name, child.mutation.description), child.origin, child.mutation.description,
                    self._expected(child.expectation), tuple(sorted(context)) if bundled or needs_context else (),
                    bundled=bundled)
        self._add(atom)
        return atom

    def _expected(self, expectation: Expectation | None) -> Prior | None:
        """A source's expectation as a prior: a catalog effect in full where it was measured (the built-in baseline,
        this device and budget), shrunk elsewhere; an LLM's stated effect, halved."""
        if expectation is None:
            return None
        config = self.search.config
        here = f"built-in baseline, {config.device_kind}, {config.budget}"
        weight = 1.0 if expectation.measured_on == here and config.baseline is None else \
            FOREIGN_WEIGHT if expectation.measured_on else STATED_WEIGHT
        return Prior(weight * expectation.mean, max(expectation.sd, abs(expectation.mean) * (1 - weight)))

    def _add(self, atom: Atom) -> None:
        self.atoms.add(atom)
        self.search.add_atom(atom)

    # ================================================================ failures
    def _blame(self, request: Request, result: EvalResult, quiet: bool = False) -> None:
        """A failed run of a stack: its one new atom is out; several new atoms at once rule out that stack."""
        stack = self._stack_of(request.variant)
        if stack is None or request.split != "val":
            return
        new = sorted(stack - self._observed_atoms())
        if len(new) == 1:
            self.dead.add(new[0])
        else:
            self.forbidden.add(stack)
        if not quiet:
            self.search.decide(request.variant, DecisionKind.FAILED, reason=f"{result.status.value}: {result.message}",
                               blamed=new if len(new) == 1 else [], log_tail=_last_lines(result.log_tail))

    # ================================================================ the final stage
    def _confirm(self) -> Program:
        """Confirmation runs of the answer's least certain members (each left out, on seeds the answer ran on),
        a slot's worth at a time, then the answer read again from the model."""
        left = self._confirm_runs() - sum(1 for r, _ in self.search.finished() if r.purpose == "confirm")
        while left > 0:
            posterior = self._fit()
            answer = self._best(posterior)
            batch = self._confirmations(answer, posterior)[:min(left, self.search.slots)]
            if not batch:
                break
            left -= len(batch)
            yield batch
        self._answer = self._best(self._fit())
        self.search.event(f"answer: {len(self._answer)} atoms, " + ", ".join(_short(a) for a in sorted(self._answer)))

    def _confirmations(self, answer: frozenset[str], posterior: Posterior) -> list[Request]:
        if not answer:
            return []
        found, taken = [], set()
        seeds = self._seeds_of(answer)
        if len(seeds) < 2:
            found.append(self._run(answer, purpose="confirm"))
            taken.add(found[-1].seed)
        doubts = sorted((posterior.prob_better(answer, answer - self._dependents(a, answer)), a) for a in answer)
        for chance, atom in doubts:
            if chance >= CONFIDENT:
                break
            without = answer - self._dependents(atom, answer)
            if without in self.forbidden or self.atoms.source(without) is None:
                continue
            if len(self._seeds_of(without)) < len(self.seeds):
                request = self._run(without, prefer=seeds or taken, purpose="confirm")
                if request.key not in {r.key for r in found}:
                    found.append(request)
        return found

    # ================================================================ bookkeeping
    def _stack_of(self, variant_id: str) -> frozenset[str] | None:
        if variant_id == self.base.id:
            return frozenset()
        atoms = self.search.variant(variant_id).atoms
        return None if atoms is None else frozenset(atoms)

    def _variant(self, stack: frozenset[str]) -> Variant:
        source = self.atoms.source(stack)
        if source is None:
            raise UserError(f"the atoms {sorted(stack)} do not merge into one file")
        if not stack:
            return self.base
        description = " + ".join(_short(a) for a in sorted(stack))
        mutation = _diff(self.base.source, source, description)
        variant, _ = self.search.add_variant(source, parents=(self.base.id,), mutation=mutation, origin="stack",
                                             atoms=tuple(sorted(stack)))
        return variant

    def _runs(self) -> list[tuple[frozenset[str], int]]:
        """(stack, seed) of every full-budget validation run, finished (in the order they finished) or running."""
        requests = [r for r, _ in self.search.finished()] + self.search.in_flight()
        found = []
        for request in requests:
            stack = self._stack_of(request.variant)
            if stack is not None and request.split == "val" and request.budget == self.budget:
                found.append((stack, request.seed))
        return found

    def _seeds_of(self, stack: frozenset[str]) -> set[int]:
        """Seeds the stack ran on or runs on now."""
        return {seed for s, seed in self._runs() if s == stack}

    def _running(self, stack: frozenset[str]) -> bool:
        return any(self._stack_of(r.variant) == stack for r in self.search.in_flight())

    def _observed(self, stack: frozenset[str]) -> bool:
        return any(o.stack == stack for o in self._observations())

    def _active(self) -> set[str]:
        """Atoms that have been in a run (finished, failed or running)."""
        return {a for stack, _ in self._runs() for a in stack} - self.dead

    def _observed_atoms(self) -> set[str]:
        return {a for o in self._observations() for a in o.stack} - self.dead

    def _dependents(self, atom: str, stack: frozenset[str]) -> frozenset[str]:
        """The atom and the members of the stack that require it."""
        return frozenset(a for a in stack if atom in self.atoms.closure([a]))


def _mutation(data: dict):
    from mutations.edits import Mutation

    return Mutation.from_dict(data)


def _diff(base: str, source: str, description: str):
    from mutations.diff import structural_diff

    return structural_diff(base, source, "stack", description)


def _shown(value: float | int) -> str:
    """A knob level as its atom's name writes it (search/atoms.py, knob_atom)."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _short(name: str) -> str:
    return name.removeprefix("catalog:").removeprefix(KNOB_PREFIX)


def _interval(mean: float, sd: float) -> dict:
    return {"mean": mean, "sd": sd, "ci_low": mean - 1.96 * sd, "ci_high": mean + 1.96 * sd}


def _last_lines(text: str, count: int = 5) -> str:
    return "\n".join(text.strip().splitlines()[-count:])
