"""The statistics behind every number qsearch reports: speedup intervals from blocks of paired
runs, paired accuracy differences, and ties. Pure functions, so they are tested exactly.

Why blocks: consecutive pair ratios are not independent (the machine's state drifts, a
neighbour process comes and goes), so an interval from individual pairs is far too narrow (on
this machine: +-1% within a run while separate runs spread 1.70x-1.90x). The interval here is
a t-interval over per-block mean log-ratios, widened to at least `floor`: the run-to-run drift
that no single run can see, measured by `benchmarks/measurement_stability.py`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Two-sided 97.5% quantiles of Student's t for 1..30 degrees of freedom (then ~normal).
_T975 = [
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
]


def t975(df: int) -> float:
    if df < 1:
        return float("inf")
    return _T975[df - 1] if df <= len(_T975) else 1.96 + 2.4 / df


@dataclass(frozen=True)
class Estimate:
    ratio: float  # geometric mean of the block ratios
    low: float
    high: float
    blocks: int

    @property
    def rel_half_width(self) -> float:
        return (self.high - self.low) / (2 * self.ratio) if self.ratio > 0 else float("inf")


@dataclass(frozen=True)
class Spread:
    """Squared deviations of block log-ratios from their own measurement's mean, summed over
    measurements, and their degrees of freedom: the block-to-block variance of one worker,
    pooled. A trial that holds two blocks (a BERT-base-size model: one pair takes 4-5 s of a
    12 s budget) reads its own variance with one degree of freedom, and Student's t at one
    degree is 12.7: 1.98x read [0.50-7.94] on an AMD EPYC (avx2). The spread between blocks
    is the machine's and the model's, not the config's, so the worker's earlier measurements
    of the same block size lend theirs (the pooled variance of a one-way layout)."""

    ss: float = 0.0
    df: int = 0

    def add(self, block_log_ratios: Sequence[float]) -> Spread:
        logs = np.asarray(block_log_ratios, dtype=float)
        if len(logs) < 2:
            return self
        ss = float(np.sum((logs - logs.mean()) ** 2))
        return Spread(self.ss + ss, self.df + len(logs) - 1)


def block_estimate(
    block_log_ratios: Sequence[float], floor: float = 0.0, prior: Spread | None = None
) -> Estimate:
    """Speedup and 95% interval from per-block mean log-ratios (baseline time / candidate).
    With `prior` (`Spread`), two or more blocks read their variance pooled with it."""
    logs = np.asarray(block_log_ratios, dtype=float)
    k = len(logs)
    if k == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    mean = float(np.mean(logs))
    if k > 1:
        pooled = (prior or Spread()).add(logs)
        half = t975(pooled.df) * math.sqrt(pooled.ss / pooled.df / k)
    else:
        half = float("inf")
    half = max(half, math.log1p(floor))
    return Estimate(math.exp(mean), math.exp(mean - half), math.exp(mean + half), k)


@dataclass(frozen=True)
class PairedDifference:
    """Candidate minus fp32 accuracy on the same examples, with its interval."""

    diff: float
    low: float
    high: float
    mcnemar_p: float  # exact two-sided McNemar test on the discordant examples
    discordant: int


def paired_accuracy_difference(
    candidate_correct: np.ndarray, fp32_correct: np.ndarray, resamples: int = 2000, seed: int = 0
) -> PairedDifference:
    """Paired bootstrap over examples: far narrower than two separate accuracy intervals,
    because most examples are right (or wrong) for both models."""
    a = np.asarray(candidate_correct, dtype=float)
    b = np.asarray(fp32_correct, dtype=float)
    per_example = a - b
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(per_example), size=(resamples, len(per_example)))
    means = per_example[idx].mean(axis=1)
    gained = int(np.sum((a == 1) & (b == 0)))
    lost = int(np.sum((a == 0) & (b == 1)))
    return PairedDifference(
        diff=float(per_example.mean()),
        low=float(np.percentile(means, 2.5)),
        high=float(np.percentile(means, 97.5)),
        mcnemar_p=mcnemar_exact(gained, lost),
        discordant=gained + lost,
    )


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value (binomial test of b against b + c at one half)."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def tie_groups(intervals: Sequence[tuple[float, float, float]]) -> list[int]:
    """Group (value, low, high) by overlapping intervals, best value first: a config ties with
    the best of its group when its interval reaches that one's. Returns a group per item."""
    order = sorted(range(len(intervals)), key=lambda i: -intervals[i][0])
    group = [0] * len(intervals)
    current, leader_low = -1, None
    for i in order:
        _, low, high = intervals[i]
        if leader_low is None or high < leader_low:
            current += 1
            leader_low = low
        group[i] = current
    return group


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def hypergeometric_cdf(k: int, population: int, successes: int, draws: int) -> float:
    """P(K <= k) for K successes in `draws` taken without replacement from `population`
    items of which `successes` are successes."""
    low = max(0, draws - (population - successes))
    high = min(draws, successes)
    if k < low:
        return 0.0
    if k >= high:
        return 1.0
    total = _log_comb(population, draws)
    terms = (
        _log_comb(successes, j) + _log_comb(population - successes, draws - j) - total
        for j in range(low, k + 1)
    )
    return min(1.0, sum(math.exp(t) for t in terms))


def population_upper_bound(correct: int, seen: int, population: int, alpha: float) -> int:
    """One-sided exact (1 - alpha) upper bound on the successes in the whole finite
    population, from `correct` successes among `seen` items drawn uniformly without
    replacement: the largest M that a hypergeometric test at level alpha does not reject.

    This is Clopper-Pearson's construction with the hypergeometric in place of the binomial:
    exact for a finite evaluation set, tighter than the binomial as the sample grows, and
    equal to `correct` once every item is seen (no uncertainty is left).
    """
    if not 0 <= correct <= seen <= population:
        raise ValueError(
            f"need 0 <= correct <= seen <= population, got {correct}, {seen}, {population}"
        )
    low, high = correct, correct + population - seen  # P(K <= correct | M) falls as M grows
    while low < high:
        mid = (low + high + 1) // 2
        if hypergeometric_cdf(correct, population, mid, seen) > alpha:
            low = mid
        else:
            high = mid - 1
    return low
