"""One Optuna study over everything at once: each change a yes/no parameter, each knob its own range.

What a user would try first with a hyperparameter tool: every change the source offers on the
baseline (it must offer them all up front, as the catalog does) becomes a boolean, every
tunable knob of the baseline a parameter over its range; each trial is one run at the full
budget on one seed, and the answer is the best trial. A baseline for the benchmark
(benchmarks/search_efficiency.py), and a choice (`search evolve --strategy tpe`).
"""
from __future__ import annotations

import optuna
from optuna.trial import TrialState

from mutations.diff import structural_diff
from mutations.knobs import extract_knobs, set_knobs
from population.store import DecisionKind
from search import ablation
from search.atoms import Atom, Atoms, rebase
from search.evaluator import Request
from search.knob_tuning import make_sampler
from search.strategies._base import Outcome, Signal, Strategy
from trainer.errors import UserError
from trainer.result import EvalResult

STUDY = "tpe"
_ATTEMPTS = 20   # trials asked in a row before giving up on finding one whose changes merge


class TpeStrategy(Strategy):
    name = "tpe"

    def __init__(self, search) -> None:
        super().__init__(search)
        if not search.exhaustive_source:
            raise UserError("the tpe strategy needs every change up front: use --mutator catalog (or another "
                            "strategy with an LLM)")
        config = search.config
        self.base = search.baseline
        self.seed = search.ladder.top.seeds[0]
        self.atoms = Atoms(self.base.source)
        for stored in search.stored_atoms():
            self.atoms.add(Atom(stored.name, _mutation(stored.mutation), stored.origin, stored.description))
        if not len(self.atoms):
            self._enumerate()
        self.knobs = [k for k in extract_knobs(self.base.source, config.device_kind)
                      if k.distribution.kind in ("log", "float", "int") and not isinstance(k.default, bool)]
        self.space = {name: optuna.distributions.CategoricalDistribution([False, True]) for name in self.atoms.by_name}
        self.space.update({k.name: k.distribution.to_optuna() for k in self.knobs})
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.study = optuna.create_study(study_name=STUDY, storage=config.storage_url(), direction="minimize",
                                         sampler=make_sampler(config.sampler, config.seed), load_if_exists=True)
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            self.study.tell(trial.number, state=TrialState.FAIL)  # asked before the search stopped
        if not self.study.trials:
            self.study.enqueue_trial({**{name: False for name in self.atoms.by_name},
                                      **{k.name: k.default for k in self.knobs}})
        self.pending: dict[str, int] = {}   # variant id -> trial number

    def _enumerate(self) -> None:
        while (child := self.search.propose(self.base, exclude=frozenset(self.atoms.by_name))) is not None:
            name = child.mutation.name or child.origin
            if child.refusal or name in self.atoms:
                continue
            mutation, _ = rebase(self.base.source, self.base.source, child.source)
            atom = Atom(name, mutation.named(name), child.origin, child.mutation.description)
            self.atoms.add(atom)
            self.search.add_atom(atom)

    # ---------------------------------------------------------------- ask / tell
    def ask(self) -> Request | Signal:
        if not self.search.searching:
            return Signal.WAIT if self.search.in_flight() else Signal.DONE
        running = {r.variant for r in self.search.in_flight()}
        for _ in range(_ATTEMPTS):
            trial = self.study.ask(self.space)
            source = self._source(trial.params)
            if source is None:
                self.study.tell(trial, state=TrialState.FAIL)
                continue
            variant = self.base
            if source != self.base.source:
                mutation = structural_diff(self.base.source, source, "tpe", f"trial {trial.number}")
                variant, _ = self.search.add_variant(source, parents=(self.base.id,), mutation=mutation, origin="tpe")
            trial.set_user_attr("variant", variant.id)
            self.search.count_child()
            request = Request(variant.id, self.search.top_budget, self.seed, purpose="search")
            done = self.search.result(request)
            if done is not None or variant.id in running:  # the same variant ran, or runs, for another trial
                if done is None:
                    self.study.tell(trial, state=TrialState.FAIL)
                else:
                    self._tell(trial.number, done)
                continue
            self.pending[variant.id] = trial.number
            return request
        return Signal.WAIT if self.search.in_flight() else Signal.DONE

    def tell(self, request: Request, result: EvalResult) -> None:
        number = self.pending.pop(request.variant, None)
        if number is not None:
            self._tell(number, result)

    def _tell(self, number: int, result: EvalResult) -> None:
        if result.status.is_ok():
            self.study.tell(number, result.val_bpb)
        else:
            self.study.tell(number, state=TrialState.FAIL)

    def incumbent(self) -> str:
        complete = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not complete:
            return self.base.id
        return min(complete, key=lambda t: t.value).user_attrs["variant"]

    def outcome(self) -> Outcome:
        best = self.search.variant(self.incumbent())
        if best.id == self.base.id:
            return Outcome(best.id)
        params = self.study.best_trial.params
        members = [self.atoms.by_name[name] for name in self.atoms.by_name if params.get(name)]
        device = self.search.config.device_kind
        for knob in self.knobs:
            if params[knob.name] != knob.default:
                tuned = set_knobs(self.base.source, {knob.name: params[knob.name]}, device)
                name = f"knob:{knob.name}={params[knob.name]}"
                members.append(Atom(name, structural_diff(self.base.source, tuned, name), "knob",
                                    f"{knob.name} {knob.default} -> {params[knob.name]}"))
        self.search.decide(best.id, DecisionKind.ACCEPTED, reason=f"the best of {len(self.study.trials)} trials")
        return Outcome(best.id, ablation.rows(self.search, best, ablation.variants(self.search, members, best), {}))

    def _source(self, params: dict) -> str | None:
        """The baseline with the chosen changes merged and the knobs set; None when they do not combine."""
        source = self.atoms.source([name for name in self.atoms.by_name if params.get(name)])
        if source is None:
            return None
        try:
            return set_knobs(source, {k.name: params[k.name] for k in self.knobs}, self.search.config.device_kind)
        except UserError:  # a change removed a knob, or the values break a constraint (HEADS must divide WIDTH)
            return None


def _mutation(data: dict):
    from mutations.edits import Mutation

    return Mutation.from_dict(data)
