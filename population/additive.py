"""One Bayesian model of additive effects over every evaluation of a search.

A variant is the baseline plus a stack of atoms (code changes rebased onto the baseline, and
knob levels). Every evaluation, at any budget and seed, is one observation of

    val_bpb = level[budget] + seed[budget, seed] + sum of effect[a] over the stack
              + sum of interaction[a, b] over the stack's pairs + noise

so a run teaches the model about every atom it holds, and pairing on seeds comes for free
(the seed terms absorb what a seed does to every variant alike).

Priors, all Gaussian, so the posterior is exact and cheap (a Cholesky factor of a few hundred
columns): the levels are nearly flat; seed effects are N(0, s^2) with s estimated from them
(never below the noise); an atom's effect is
N(prior mean, prior sd), where the mean is what its proposer expected (the catalog's measured
effect, an LLM's stated expectation) and 0 otherwise; an interaction is N(0, s_ab^2) with s_ab
set by automatic relevance determination (Tipping 2001): refits that shrink each interaction
the data do not support towards zero, so interactions stay sparse, as BOCS's horseshoe keeps
them (Baptista and Poloczek 2018), without sampling. The noise variance comes from the
residuals and replicates, with a weak prior of a few pseudo-observations.
"""
from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import linalg
from scipy.stats import norm

_LEVEL_SCALE = 100.0      # a level's prior sd, in units of the atom scale: nearly flat
_NOISE_PSEUDO_COUNT = 3.0  # weight of the noise prior, in observations
_ARD_ROUNDS = 3
_ARD_FLOOR = 0.05         # an unsupported interaction keeps this share of the interaction scale
_MIN_PAIR_RUNS = 2        # an interaction is modelled once its pair ran together this often
_PAIR_EVIDENCE = 4.0      # ... and it explains the main-effects fit's residuals: a squared t above 4, and above
                          # ln(candidates) when many pairs are screened (then the strongest few, shrunk by ARD)
_PAIRS_PER_RUN = 1 / 8    # at most one interaction per 8 observations: most pairs are never identifiable
_JITTER = 1e-6            # keeps a curve's prior covariance invertible


@dataclass(frozen=True)
class Prior:
    """What is believed about an atom's effect (val_bpb, negative = better) before any run."""

    mean: float = 0.0
    sd: float | None = None   # None: the model's default scale
    sparse: bool = False      # most such changes do next to nothing: let the data shrink it (ARD), up to sd


@dataclass(frozen=True)
class Curve:
    """Atoms that are levels of one knob: their effects lie on one smooth curve, 0 at the baseline's value.

    Its prior is a Gaussian process over the knob's coordinate (log of the value for rates and sizes, the
    value over its range for fractions), conditioned on 0 at the baseline: levels close together get
    alike effects, so a run at one level teaches the model about its neighbours too."""

    positions: dict[str, float]   # atom -> its coordinate, the baseline's value at 0
    length: float                 # how far apart two levels may be and still move val_bpb alike

    def covariance(self, names: Sequence[str], sd: float) -> np.ndarray:
        x = np.array([self.positions[n] for n in names])
        k = np.exp(-0.5 * ((x[:, None] - x[None, :]) / self.length) ** 2)
        anchor = np.exp(-0.5 * (x / self.length) ** 2)
        return sd ** 2 * (k - np.outer(anchor, anchor)) + _JITTER * sd ** 2 * np.eye(len(x))


@dataclass(frozen=True)
class Observation:
    stack: frozenset[str]
    budget: str
    seed: int
    value: float


class Effects:
    """One set of effect values (the posterior mean, or a Thompson draw): evaluates any stack."""

    def __init__(self, atoms: tuple[str, ...], main: np.ndarray, pairs: np.ndarray) -> None:
        self.atoms = atoms
        self.main = main        # per atom
        self.pairs = pairs      # symmetric atom x atom matrix of interactions, zero diagonal
        self._where = {name: i for i, name in enumerate(atoms)}

    def value(self, stack: Iterable[str]) -> float:
        """The stack's effect relative to the baseline (the empty stack); atoms the model does not know add 0."""
        chosen = [self._where[a] for a in stack if a in self._where]
        if not chosen:
            return 0.0
        index = np.array(chosen)
        return float(self.main[index].sum() + 0.5 * self.pairs[np.ix_(index, index)].sum())


class Posterior:
    """The fitted model: effects with their uncertainty, contrasts between stacks, Thompson draws."""

    def __init__(self, atoms: tuple[str, ...], pairs: tuple[tuple[str, str], ...], columns: int, first_atom: int,
                 mean: np.ndarray, precision_factor: np.ndarray, noise_sd: float, observations: int) -> None:
        self.atoms, self.pairs = atoms, pairs
        self._columns, self._first = columns, first_atom
        self._mean, self._factor = mean, precision_factor   # lower Cholesky factor of the precision matrix
        self.noise_sd, self.observations = noise_sd, observations
        self._atom = {name: first_atom + i for i, name in enumerate(atoms)}
        self._pair = {pair: first_atom + len(atoms) + i for i, pair in enumerate(pairs)}

    # ---------------------------------------------------------------- reading
    def _vector(self, stack: Iterable[str]) -> np.ndarray:
        stack = set(stack)
        x = np.zeros(self._columns)
        for name in stack:
            if name in self._atom:
                x[self._atom[name]] = 1.0
        for (a, b), column in self._pair.items():
            if a in stack and b in stack:
                x[column] = 1.0
        return x

    def contrast(self, stack: Iterable[str], reference: Iterable[str] = ()) -> tuple[float, float]:
        """(mean, sd) of f(stack) - f(reference): negative means the stack is better."""
        d = self._vector(stack) - self._vector(reference)
        mean = float(d @ self._mean)
        half = linalg.solve_triangular(self._factor, d, lower=True)
        return mean, float(math.sqrt(max(half @ half, 0.0)))

    def prob_better(self, stack: Iterable[str], reference: Iterable[str] = ()) -> float:
        """P(f(stack) < f(reference)) under the posterior."""
        mean, sd = self.contrast(stack, reference)
        if sd == 0:
            return float(mean < 0)
        return float(norm.cdf(-mean / sd))

    def effect(self, atom: str) -> tuple[float, float]:
        """(mean, sd) of one atom's effect alone on the baseline."""
        return self.contrast([atom])

    def expected(self) -> Effects:
        return self._effects(self._mean)

    def draw(self, rng: np.random.Generator) -> Effects:
        """A Thompson sample of every effect."""
        z = rng.standard_normal(self._columns)
        theta = self._mean + linalg.solve_triangular(self._factor.T, z, lower=False)
        return self._effects(theta)

    def _effects(self, theta: np.ndarray) -> Effects:
        count = len(self.atoms)
        main = theta[self._first:self._first + count].copy()
        pairs = np.zeros((count, count))
        where = {name: i for i, name in enumerate(self.atoms)}
        for (a, b), column in self._pair.items():
            pairs[where[a], where[b]] = pairs[where[b], where[a]] = theta[column]
        return Effects(self.atoms, main, pairs)


def fit(observations: Sequence[Observation], priors: dict[str, Prior], scale: float, noise_sd: float,
        interactions: bool = True, curves: Sequence[Curve] = ()) -> Posterior:
    """The posterior given every observation; `priors` names every atom (observed or not), `scale` is the
    default prior sd of an effect and `noise_sd` the prior guess of the noise (both in val_bpb); the atoms of
    a curve share a smooth prior (their own priors give its sd)."""
    if scale <= 0 or noise_sd <= 0:
        raise ValueError(f"scale and noise_sd must be positive, but got {scale=}, {noise_sd=}")
    atoms = tuple(sorted(priors))
    main = _Model(observations, atoms, (), priors, scale, curves)
    posterior, design = main.fit(noise_sd)
    if not interactions:
        return posterior
    pairs = _supported_pairs(observations, atoms, posterior, design)
    if not pairs:
        return posterior
    return _Model(observations, atoms, pairs, priors, scale, curves).fit(noise_sd)[0]


class _Model:
    """The design matrix and the prior of one set of columns: levels, seeds, atoms, pairs."""

    def __init__(self, observations: Sequence[Observation], atoms: tuple[str, ...],
                 pairs: tuple[tuple[str, str], ...], priors: dict[str, Prior], scale: float,
                 curves: Sequence[Curve] = ()) -> None:
        self.observations, self.atoms, self.pairs = observations, atoms, pairs
        budgets = sorted({o.budget for o in observations})
        seeds = sorted({(o.budget, o.seed) for o in observations})
        self.first = len(budgets) + len(seeds)
        self.columns = self.first + len(atoms) + len(pairs)
        level = {b: i for i, b in enumerate(budgets)}
        seed = {s: len(budgets) + i for i, s in enumerate(seeds)}
        self.seed_columns = list(seed.values())
        self.pair_columns = list(range(self.first + len(atoms), self.columns))
        atom = {name: self.first + i for i, name in enumerate(atoms)}
        self.design = np.zeros((len(observations), self.columns))
        self.y = np.array([o.value for o in observations], dtype=float)
        for row, o in enumerate(observations):
            self.design[row, level[o.budget]] = self.design[row, seed[(o.budget, o.seed)]] = 1.0
            for name in o.stack:
                self.design[row, atom[name]] = 1.0
            for column, (a, b) in zip(self.pair_columns, pairs):
                if a in o.stack and b in o.stack:
                    self.design[row, column] = 1.0
        self.prior_mean = np.zeros(self.columns)
        self.prior_var = np.zeros(self.columns)
        for b, column in level.items():
            self.prior_mean[column] = float(np.mean([o.value for o in observations if o.budget == b]))
            self.prior_var[column] = (_LEVEL_SCALE * scale) ** 2
        self.sparse = {}   # column -> its largest prior variance, for atoms whose prior shrinks by relevance
        for name, column in atom.items():
            self.prior_mean[column] = priors[name].mean
            self.prior_var[column] = (priors[name].sd or scale) ** 2
            if priors[name].sparse:
                self.sparse[column] = self.prior_var[column]
        self.pair_scale = scale / 2
        self.prior_var[self.pair_columns] = self.pair_scale ** 2
        self.blocks = []   # (columns, inverse prior covariance) of each curve
        for curve in curves:
            names = [n for n in curve.positions if n in atom]
            if names:
                cov = curve.covariance(names, priors[names[0]].sd or scale)
                self.blocks.append(([atom[n] for n in names], np.linalg.inv(cov)))

    def _seed_spread(self, mean: np.ndarray, factor: np.ndarray) -> float:
        """The seeds' shared variance, from their fitted effects (empirical Bayes): a seed that moves every
        variant a lot is estimated as such, not shrunk into the noise."""
        if not self.seed_columns:
            return 0.0
        total = 0.0
        for column in self.seed_columns:
            unit = np.zeros(self.columns)
            unit[column] = 1.0
            spread = linalg.solve_triangular(factor, unit, lower=True)
            total += mean[column] ** 2 + spread @ spread
        return total / len(self.seed_columns)

    def _prior_precision(self) -> np.ndarray:
        precision = np.diag(1.0 / self.prior_var)
        for columns, inverse in self.blocks:
            precision[np.ix_(columns, columns)] = inverse
        return precision

    def fit(self, noise_sd: float) -> tuple[Posterior, np.ndarray]:
        noise_var = seed_var = noise_sd ** 2
        for _ in range(_ARD_ROUNDS if self.pairs or self.sparse else 1):
            for _ in range(3):  # the noise, the seeds' spread and the fit settle in a few rounds
                self.prior_var[self.seed_columns] = seed_var
                mean, factor, used = _solve(self.design, self.y, self.prior_mean, self._prior_precision(), noise_var)
                residual = self.y - self.design @ mean
                free = max(1.0, len(self.y) - used)
                noise_var = (_NOISE_PSEUDO_COUNT * noise_sd ** 2 + float(residual @ residual)) / \
                    (_NOISE_PSEUDO_COUNT + free)
                seed_var = max(noise_var, self._seed_spread(mean, factor))
            # automatic relevance determination of the interactions and the sparse atoms
            ceilings = {**{c: self.pair_scale ** 2 for c in self.pair_columns}, **self.sparse}
            for column, ceiling in ceilings.items():
                unit = np.zeros(self.columns)
                unit[column] = 1.0
                spread = linalg.solve_triangular(factor, unit, lower=True)
                self.prior_var[column] = float(np.clip(mean[column] ** 2 + spread @ spread, _ARD_FLOOR ** 2 * ceiling,
                                                       ceiling))
        posterior = Posterior(self.atoms, self.pairs, self.columns, self.first, mean, factor, math.sqrt(noise_var),
                              len(self.observations))
        return posterior, self.design


def _solve(design: np.ndarray, y: np.ndarray, prior_mean: np.ndarray, prior_precision: np.ndarray,
           noise_var: float) -> tuple[np.ndarray, np.ndarray, float]:
    """(posterior mean, lower Cholesky factor of the precision, effective number of fitted parameters)."""
    gram = design.T @ design / noise_var
    precision = gram + prior_precision
    factor = linalg.cholesky(precision, lower=True)
    rhs = design.T @ y / noise_var + prior_precision @ prior_mean
    mean = linalg.cho_solve((factor, True), rhs)
    used = float(np.trace(linalg.cho_solve((factor, True), gram)))
    return mean, factor, used


def _supported_pairs(observations: Sequence[Observation], atoms: tuple[str, ...], main: Posterior,
                     design: np.ndarray) -> tuple[tuple[str, str], ...]:
    """The interactions worth modelling (forward screening): pairs that ran together at least twice and apart at
    least once, whose product, once the main effects are projected out of it, explains the residuals of the
    main-effects fit beyond chance; the strongest few, at most one per 8 observations."""
    limit = int(len(observations) * _PAIRS_PER_RUN)
    if limit < 1:
        return ()
    together: Counter[tuple[str, str]] = Counter()
    alone: Counter[str] = Counter()
    known = set(atoms)
    for o in observations:
        members = sorted(o.stack & known)
        alone.update(members)
        together.update(itertools.combinations(members, 2))
    candidates = [pair for pair, count in together.items()
                  if count >= _MIN_PAIR_RUNS and (alone[pair[0]] > count or alone[pair[1]] > count)]
    if not candidates:
        return ()
    residual = np.array([o.value for o in observations]) - design @ main._mean
    noise_var = main.noise_sd ** 2
    scored = []
    for a, b in candidates:
        z = np.array([float(a in o.stack and b in o.stack) for o in observations])
        fitted = design @ linalg.cho_solve((main._factor, True), design.T @ z / noise_var)
        z_left = z - fitted    # what the main effects cannot explain of the pair's product
        spread = float(z_left @ z_left)
        if spread > 1e-9:
            scored.append(((z_left @ residual) ** 2 / (spread * noise_var), (a, b)))
    scored.sort(reverse=True)
    threshold = max(_PAIR_EVIDENCE, math.log(len(candidates)))
    return tuple(sorted(pair for score, pair in scored[:limit] if score > threshold))
