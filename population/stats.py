"""Fitness statistics on paired seeds: val_bpb, lower is better.

A child runs on the same seeds as its reference, so the seed's share of the noise cancels in
the per-seed difference; the test is a paired t-test on those differences. The noise is large
at CPU scale (seed sd 0.05-0.17 bpb in the pilots) and small on a GPU (about 7e-4 for
autoresearch's run, most kept changes there were smaller), so every judgement goes through
the measured spread, never a fixed threshold. `rank_correlation` measures whether a low rung
orders variants the way a higher rung does, which is what successive halving relies on.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

# JSON has no inf/nan: these fields are written as null and read back as these values.
_MISSING = {"sd": math.nan, "ci_low": -math.inf, "ci_high": math.inf, "p_better": math.nan}


@dataclass(frozen=True)
class Paired:
    """child - reference on the seeds both have; negative mean = child better."""

    n: int
    mean: float
    sd: float          # sd of the differences (nan when n < 2)
    ci_low: float      # two-sided t interval of the mean difference; -inf/inf when n < 2
    ci_high: float
    p_better: float    # one-sided paired t-test p-value for "child < reference"; nan when n < 2
    seeds: tuple[int, ...]

    def better(self, alpha: float) -> bool:
        """The child is better at level alpha; one seed is never evidence."""
        return self.n >= 2 and self.p_better < alpha

    def to_dict(self) -> dict:
        data = asdict(self)
        data["seeds"] = list(self.seeds)
        return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in data.items()}

    @classmethod
    def from_dict(cls, data: Mapping) -> Paired:
        values = {k: _MISSING[k] if data[k] is None else data[k] for k in ("sd", "ci_low", "ci_high", "p_better")}
        return cls(n=int(data["n"]), mean=float(data["mean"]), seeds=tuple(data["seeds"]), **values)

    def __str__(self) -> str:
        if self.n < 2:
            return f"{self.mean:+.3g} n={self.n} (no test)"
        return f"{self.mean:+.3g} [{self.ci_low:+.3g}, {self.ci_high:+.3g}] n={self.n} p={self.p_better:.2g}"


def accepts(comparison: Paired | None, alpha: float) -> bool:
    """The one acceptance rule of the successive-halving search (a child at the top rung, a re-checked elite, a
    stack step): better than its reference on a one-sided paired t-test at level alpha."""
    return comparison is not None and comparison.better(alpha)


def paired(child: Mapping[int, float], reference: Mapping[int, float], confidence: float = 0.95) -> Paired | None:
    """Compare two seed -> val_bpb maps on their common seeds; None when they share no seed."""
    seeds = tuple(sorted(set(child) & set(reference)))
    if not seeds:
        return None
    differences = [child[seed] - reference[seed] for seed in seeds]
    mean, low, high = mean_ci(differences, confidence)
    sd = _sd(differences)
    return Paired(n=len(seeds), mean=mean, sd=sd, ci_low=low, ci_high=high,
                  p_better=_p_less_than_zero(mean, sd, len(seeds)), seeds=seeds)


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the two-sided t interval of the mean; infinite when n < 2."""
    if not values:
        raise ValueError("mean_ci needs at least one value, but got none")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), but got {confidence=}")
    n, mean, sd = len(values), float(np.mean(values)), _sd(values)
    if n < 2:
        return mean, -math.inf, math.inf
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def spread(values: Sequence[float]) -> float:
    """Sample sd of repeated measurements (nan when n < 2): the measured seed noise."""
    return _sd(values)


def rank_correlation(low: Sequence[float], high: Sequence[float]) -> tuple[float, float] | None:
    """(Spearman rho, Kendall tau) between variants' scores at a low and a higher rung.

    None with fewer than 3 pairs or when either side is constant: no ranking to compare.
    """
    if len(low) != len(high):
        raise ValueError(f"rank_correlation needs one score per variant on both rungs, but got {len(low)=}, {len(high)=}")
    if len(low) < 3 or len(set(low)) == 1 or len(set(high)) == 1:
        return None
    return float(stats.spearmanr(low, high).statistic), float(stats.kendalltau(low, high).statistic)


def _sd(values: Sequence[float]) -> float:
    """Sample sd; exactly 0 when the values agree up to float rounding (a constant shift of val_bpb)."""
    if len(values) < 2:
        return math.nan
    if np.allclose(values, values[0], rtol=1e-12, atol=1e-15):
        return 0.0
    return float(np.std(values, ddof=1))


def _p_less_than_zero(mean: float, sd: float, n: int) -> float:
    """One-sided t-test p-value for "true mean < 0"; with no spread the sign of the mean decides."""
    if n < 2:
        return math.nan
    if sd == 0:
        return 0.0 if mean < 0 else 1.0
    return float(stats.t.cdf(mean / (sd / math.sqrt(n)), n - 1))


def describe_noise(noise: dict) -> str:
    """The seed noise a search reads its decisions against (meta "noise"), in one line."""
    mean = f" (baseline val_bpb {noise['mean']:.4f})" if noise.get("mean") is not None else ""
    where = f"{noise.get('n', '-')} runs at {noise.get('budget', '-')}"
    if noise.get("from"):
        return f"seed sd {noise['sd']:.4g} from {noise['from']}, {where}{mean}"
    return f"baseline seed sd {noise['sd']:.4g} over {noise.get('n', '-')} seeds at {noise.get('budget', '-')}{mean}"
