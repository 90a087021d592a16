"""The additive model (population/additive.py): effects, noise, seeds, knob curves, interactions, Thompson draws."""
from __future__ import annotations

import numpy as np
import pytest

from population.additive import Curve, Observation, Prior, fit

ATOMS = [f"a{i}" for i in range(12)]


def _random_design(effects: dict[str, float], runs: int, noise: float, seed_offsets=(0.0, 0.0, 0.0, 0.0),
                   pair: tuple[str, str] | None = None, pair_effect: float = 0.0, rng_seed: int = 0):
    rng = np.random.default_rng(rng_seed)
    observations = []
    for run in range(runs):
        stack = frozenset(a for a in effects if rng.random() < 0.5)
        seed = run % len(seed_offsets)
        value = 3.0 + sum(effects[a] for a in stack) + seed_offsets[seed] + rng.normal(0, noise)
        if pair and set(pair) <= stack:
            value += pair_effect
        observations.append(Observation(stack, "300k", seed, value))
    return observations


def test_a_random_design_recovers_every_effect_and_the_noise():
    truth = {a: e for a, e in zip(ATOMS, np.linspace(-0.1, 0.1, len(ATOMS)))}
    posterior = fit(_random_design(truth, 48, 0.01), {a: Prior() for a in ATOMS}, scale=0.1, noise_sd=0.01,
                    interactions=False)
    for atom, effect in truth.items():
        mean, sd = posterior.effect(atom)
        assert abs(mean - effect) < 4 * sd and sd < 0.01
    assert 0.005 < posterior.noise_sd < 0.02


def test_seed_effects_absorb_what_a_seed_does_to_every_variant():
    truth = {a: 0.0 for a in ATOMS}
    truth["a0"] = -0.05
    offsets = (0.3, -0.2, 0.1, -0.25)  # shared per seed, far larger than the effects
    posterior = fit(_random_design(truth, 40, 0.005, offsets), {a: Prior() for a in ATOMS}, scale=0.1,
                    noise_sd=0.005, interactions=False)
    mean, sd = posterior.effect("a0")
    assert abs(mean + 0.05) < 0.01 and sd < 0.01
    assert posterior.noise_sd < 0.02  # the seed offsets did not become noise


def test_an_atom_never_run_keeps_its_prior():
    posterior = fit(_random_design({"a0": -0.1}, 10, 0.01), {"a0": Prior(), "new": Prior(-0.2, 0.05)}, scale=0.1,
                    noise_sd=0.01)
    assert posterior.effect("new") == pytest.approx((-0.2, 0.05), abs=1e-6)


def test_contrasts_and_probabilities_are_consistent():
    posterior = fit(_random_design({"a0": -0.1, "a1": 0.05}, 20, 0.01), {"a0": Prior(), "a1": Prior()},
                    scale=0.1, noise_sd=0.01)
    assert posterior.contrast({"a0"}, {"a0"}) == (0.0, 0.0)
    assert posterior.prob_better({"a0"}) > 0.99 and posterior.prob_better({"a1"}) < 0.01
    assert posterior.prob_better({"a0"}, {"a1"}) == pytest.approx(1 - posterior.prob_better({"a1"}, {"a0"}))


def test_thompson_draws_scatter_around_the_posterior_mean():
    posterior = fit(_random_design({"a0": -0.1}, 6, 0.02), {"a0": Prior()}, scale=0.1, noise_sd=0.02)
    rng = np.random.default_rng(0)
    draws = [posterior.draw(rng).value(["a0"]) for _ in range(400)]
    mean, sd = posterior.effect("a0")
    assert np.mean(draws) == pytest.approx(mean, abs=3 * sd / 20)
    assert np.std(draws) == pytest.approx(sd, rel=0.15)


def test_a_knob_curve_lets_one_level_teach_its_neighbours():
    curve = Curve({"lr=1.3": 0.27, "lr=1.7": 0.55, "lr=5.2": 1.65}, length=0.8)
    priors = {name: Prior(0.0, 0.05) for name in curve.positions}
    observations = [Observation(frozenset(), "300k", s, 3.0) for s in range(3)]
    observations += [Observation(frozenset({"lr=1.7"}), "300k", s, 2.9) for s in range(3)]
    posterior = fit(observations, priors, scale=0.05, noise_sd=0.005, curves=[curve])
    assert posterior.effect("lr=1.7")[0] == pytest.approx(-0.1, abs=0.01)
    assert posterior.effect("lr=1.3")[0] < -0.03  # a level between the baseline and the tried one moves with it
    assert posterior.effect("lr=5.2")[1] > 3 * posterior.effect("lr=1.7")[1]  # a far one stays uncertain


def test_a_strong_interaction_is_found_and_modelled():
    truth = {a: 0.0 for a in ATOMS[:6]}
    observations = _random_design(truth, 64, 0.005, pair=("a0", "a1"), pair_effect=0.2)
    posterior = fit(observations, {a: Prior() for a in truth}, scale=0.1, noise_sd=0.005)
    assert ("a0", "a1") in posterior.pairs
    mean, _ = posterior.contrast({"a0", "a1"}, {"a0"})
    assert mean == pytest.approx(0.2, abs=0.03)  # a1 costs 0.2 when a0 is there


def test_bad_scales_are_refused():
    with pytest.raises(ValueError, match="positive"):
        fit([], {}, scale=0.0, noise_sd=0.01)
