"""Paired fitness statistics checked against hand computations (closed forms of the t distribution at 2 df)."""
from __future__ import annotations

import json
import math

import pytest

from population.stats import Paired, mean_ci, paired, rank_correlation, spread

REFERENCE = {0: 4.50, 1: 4.70, 2: 4.60}
CHILD = {0: 4.40, 1: 4.50, 2: 4.45}   # differences -0.10, -0.20, -0.15


def _t2_cdf(t: float) -> float:
    """Student t CDF with 2 degrees of freedom, in closed form."""
    return 0.5 + t / (2 * math.sqrt(2 + t * t))


def _t2_quantile(q: float) -> float:
    return (2 * q - 1) / math.sqrt(2 * q * (1 - q))


def test_a_known_example_matches_the_hand_computation():
    result = paired(CHILD, REFERENCE)
    mean, sd = -0.15, 0.05                  # sd: sqrt((0.05^2 + 0.05^2 + 0) / 2)
    t = mean / (sd / math.sqrt(3))          # -5.196
    half = _t2_quantile(0.975) * sd / math.sqrt(3)  # 4.303 * 0.02887
    assert result.n == 3 and result.seeds == (0, 1, 2)
    assert result.mean == pytest.approx(mean) and result.sd == pytest.approx(sd)
    assert (result.ci_low, result.ci_high) == pytest.approx((mean - half, mean + half))
    assert result.p_better == pytest.approx(_t2_cdf(t)) and result.p_better == pytest.approx(0.01755, abs=1e-5)
    assert result.better(0.05) and not result.better(0.01)
    assert str(result) == "-0.15 [-0.274, -0.0258] n=3 p=0.018"


def test_only_the_common_seeds_are_compared():
    result = paired({**CHILD, 7: 0.0}, {**REFERENCE, 9: 99.0})
    assert result.seeds == (0, 1, 2) and result.mean == pytest.approx(-0.15)
    assert paired({1: 4.0}, {2: 4.0}) is None


def test_one_common_seed_has_a_difference_but_no_test():
    result = paired({0: 4.0, 1: 3.0}, {0: 4.5})
    assert (result.n, result.mean) == (1, pytest.approx(-0.5))
    assert math.isnan(result.sd) and math.isnan(result.p_better)
    assert (result.ci_low, result.ci_high) == (-math.inf, math.inf)
    assert not result.better(0.99)
    assert str(result) == "-0.5 n=1 (no test)"


@pytest.mark.parametrize("shift, p", [(-0.1, 0.0), (0.1, 1.0), (0.0, 1.0)])
def test_identical_differences_are_decided_by_their_sign(shift, p):
    reference = {0: 4.5, 1: 4.7, 2: 4.6}
    result = paired({s: v + shift for s, v in reference.items()}, reference)
    assert result.sd == 0.0 and result.p_better == p
    assert result.ci_low == result.ci_high == pytest.approx(shift)


def test_swapping_child_and_reference_negates_the_mean_and_flips_p():
    forward, backward = paired(CHILD, REFERENCE), paired(REFERENCE, CHILD)
    assert backward.mean == pytest.approx(-forward.mean) and backward.sd == pytest.approx(forward.sd)
    assert backward.p_better == pytest.approx(1 - forward.p_better)
    assert (backward.ci_low, backward.ci_high) == pytest.approx((-forward.ci_high, -forward.ci_low))


@pytest.mark.parametrize("child", [CHILD, {0: 4.0}])
def test_to_dict_is_json_safe_and_round_trips(child):
    result = paired(child, REFERENCE)
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    back = Paired.from_dict(data)
    assert back.seeds == result.seeds and (back.n, back.mean, back.ci_low, back.ci_high) == (
        result.n, result.mean, result.ci_low, result.ci_high)
    assert str(back) == str(result)
    assert math.isnan(back.p_better) == math.isnan(result.p_better)


def test_mean_ci_and_spread():
    mean, low, high = mean_ci([1.0, 2.0, 3.0], confidence=0.9)
    half = _t2_quantile(0.95) * 1.0 / math.sqrt(3)
    assert (mean, low, high) == pytest.approx((2.0, 2.0 - half, 2.0 + half))
    assert mean_ci([5.0]) == (5.0, -math.inf, math.inf)
    assert spread([1.0, 2.0, 3.0]) == pytest.approx(1.0) and math.isnan(spread([1.0]))
    with pytest.raises(ValueError, match="at least one value"):
        mean_ci([])
    with pytest.raises(ValueError, match="confidence"):
        mean_ci([1.0, 2.0], confidence=95)


def test_rank_correlation():
    low = [4.1, 4.3, 4.2, 4.6]
    assert rank_correlation(low, [3.1, 3.3, 3.2, 3.9]) == pytest.approx((1.0, 1.0))
    assert rank_correlation(low, [3.9, 3.2, 3.3, 3.1]) == pytest.approx((-1.0, -1.0))
    rho, tau = rank_correlation(low, [3.1, 3.2, 3.3, 3.9])   # one swapped pair
    assert rho == pytest.approx(0.8) and tau == pytest.approx(4 / 6)
    assert rank_correlation([1.0, 2.0], [1.0, 2.0]) is None
    assert rank_correlation(low, [3.0] * 4) is None
    with pytest.raises(ValueError, match="one score per variant on both rungs"):
        rank_correlation(low, [1.0, 2.0, 3.0])
