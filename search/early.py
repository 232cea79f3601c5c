"""Early stopping: answer a hopeless trial from a sample of the evaluation set, and stop
timing a config that cannot reach the frontier.

Accuracy is scored in growing slices of one seeded random permutation of the evaluation set
(`TextClassificationTask.eval_slices`: 1/8, 1/4, 1/2, all). After each slice, an exact
one-sided upper bound on the accuracy the whole set would give
(`stats.population_upper_bound`: hypergeometric, Clopper-Pearson's construction for a finite
set) is compared with `fp32_accuracy - drop`. Each interim look spends `alpha / interim looks`
(Bonferroni), so the chance of pruning a config that would have reached the threshold is at
most `alpha` over all looks. At the last look every example is seen, the metric is exact, and
a config below the threshold is pruned without a bound (its timing would be wasted).

Only per-example metrics (`accuracy`, `agreement`) have interim looks; `macro_f1`, `mcc` and
`cosine` are scored in full and only the last, exact check applies.

Where scoring costs more than timing (a BERT-base-size model: ~27 s for 1,000 sentences on 2
cores against a 12 s timing budget), the config is timed after the first slice, racing
against the frontier at the metric's ceiling, and the rest is scored only while the config
can still reach the frontier: once a frontier point at least as accurate as the ceiling is
faster than the config's speedup upper bound (`dominated`), no example left can change its
place, and its metric is estimated from the examples seen (`Scorer.result`: fp32's on every
example plus the config's paired difference on those). The bound is the pruning's own, so
the two stops together still err with chance at most `alpha`.

There, scoring also stops once the search's own question about the config is answered: is
it within `--max-drop` of fp32 (`decided`)? Exact bounds on its drop over the whole set come
from the examples where its class differs from fp32's (`drop_range`: only those can move the
metric away from fp32's); once both sides of the bar are told apart, the beam's ranking of
the config (an answer or not) cannot change with more examples, and its exact metric matters
only if it ends on the frontier, where `search.completion` scores it on every example before
the search reports. So a trial costs what the search's decision needs, and the frontier's
numbers are still exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from search.errors import QsearchError
from search.stats import population_upper_bound

PER_EXAMPLE_METRICS = ("accuracy", "agreement")


@dataclass(frozen=True)
class PruneSettings:
    """When a trial is answered early; recorded with every trial."""

    # Prune below fp32 - drop: 5 points, the hypervolume reference point of the
    # search-efficiency benchmark (a config below it adds nothing to the hypervolume).
    drop: float = 0.05
    alpha: float = 0.01  # chance of wrongly pruning a config, over all looks together
    race: bool = True  # stop timing once the config provably cannot reach the frontier
    # Time a config after the first slice, before scoring the rest, where the rest would cost
    # more than this many timing budgets (`--timing-seconds`): the rest is then scored only
    # while the config can still reach the frontier at its metric's ceiling. A BERT-base-size
    # model's 875 other examples take ~24 s on 2 cores against a 12 s budget; the default
    # task's ~3 s. 0: always; None: never. Needs `race`.
    time_first: float | None = 1.0
    # The tolerance a config timed first is decided against (`decided`): `--max-drop`.
    # None: score on until dominated or done.
    max_drop: float | None = 0.01

    def __post_init__(self) -> None:
        if not 0 <= self.drop <= 1:
            raise QsearchError(f"--prune-drop must be a fraction in [0, 1], but got {self.drop}")
        if not 0 < self.alpha < 1:
            raise QsearchError(f"prune alpha must be in (0, 1), but got {self.alpha}")
        if self.time_first is not None and not self.time_first >= 0:
            raise QsearchError(f"time_first must be >= 0 or None, but got {self.time_first}")
        if self.max_drop is not None and not 0 <= self.max_drop <= 1:
            raise QsearchError(f"--max-drop must be a fraction in [0, 1], but got {self.max_drop}")

    def to_dict(self) -> dict:
        return asdict(self)


def per_example_hits(
    metric: str, outputs: np.ndarray, references: np.ndarray | None, fp32_outputs: np.ndarray
) -> np.ndarray | None:
    """1 where the candidate scores on an example (right label, or fp32's class), else 0;
    None for metrics that are not a mean over examples."""
    if metric not in PER_EXAMPLE_METRICS:
        return None
    predictions = np.argmax(outputs, axis=-1)
    if metric == "accuracy":
        target = np.asarray(references)[: len(predictions)]
    else:
        target = np.argmax(fp32_outputs[: len(predictions)], axis=-1)
    return (predictions == target).astype(np.int64)


def drop_range(
    metric: str,
    outputs: np.ndarray,
    references: np.ndarray | None,
    fp32_outputs: np.ndarray,
    total: int,
    alpha: float,
) -> tuple[float, float] | None:
    """Exact bounds (each side at level `alpha`) on the config's drop from fp32 over all
    `total` examples, from the first `len(outputs)` (a uniform random sample): on an unseen
    example the two can differ only where their classes differ, so the drop on the rest lies
    within +-(the disagreements left), bounded by the hypergeometric bound on disagreements.
    For `agreement` fp32 scores 1 everywhere, so the drop is the disagreements' share. None
    for metrics that are not a mean over examples."""
    if metric not in PER_EXAMPLE_METRICS:
        return None
    seen = len(outputs)
    predictions = np.argmax(outputs, axis=-1)
    fp32 = np.argmax(fp32_outputs[:seen], axis=-1)
    differ = int((predictions != fp32).sum())
    most = population_upper_bound(differ, seen, total, alpha)  # disagreements, all examples
    if metric == "agreement":
        least = total - population_upper_bound(seen - differ, seen, total, alpha)
        return least / total, most / total
    target = np.asarray(references)[:seen]
    gap = int((fp32 == target).sum()) - int((predictions == target).sum())
    left = most - differ
    return (gap - left) / total, (gap + left) / total


def look_evidence(
    hits: np.ndarray,
    total: int,
    threshold: float,
    alpha_look: float,
    look: int,
    looks: int,
    drop: tuple[float, float] | None = None,
) -> dict:
    """The numbers behind one interim look: what was seen and the bounds on the full set
    (the metric's ceiling; with `drop`, the drop's range from `drop_range`)."""
    seen, correct = len(hits), int(hits.sum())
    ceiling = population_upper_bound(correct, seen, total, alpha_look) / total
    extra = {} if drop is None else {"drop_low": round(drop[0], 5), "drop_high": round(drop[1], 5)}
    return {
        "look": look,
        "looks": looks,
        "examples_seen": seen,
        "examples_total": total,
        "metric_so_far": round(correct / seen, 5),
        "metric_ceiling": round(ceiling, 5),
        "threshold": round(threshold, 5),
        "alpha_per_look": alpha_look,
        "bound": "one-sided exact hypergeometric upper bound, Bonferroni over interim looks",
        "hopeless": ceiling < threshold - 1e-12,
        **extra,
    }


def race_bar(frontier: Sequence[tuple[float, float]], accuracy: float) -> float | None:
    """The highest speedup lower bound among points at least as accurate as `accuracy`:
    a config whose speedup upper bound stays below it cannot reach the frontier (None: no
    such point)."""
    lows = [low for acc, low in frontier if acc >= accuracy - 1e-12]
    return max(lows) if lows else None


def dominated(
    frontier: Sequence[tuple[float, float]], look: dict, speedup_high: float
) -> dict | None:
    """Why scoring may stop at this interim `look`: a frontier point (accuracy, speedup lower
    bound) at least as accurate as the metric's ceiling is faster than the config's speedup
    upper bound, so the config is dominated whatever the examples left say. None while it
    can still reach the frontier."""
    bar = race_bar(frontier, look["metric_ceiling"])
    if bar is None or speedup_high >= bar:
        return None
    return _stopped_at(
        look,
        f"at most {look['metric_ceiling']:.3f} on all, where the frontier is at least "
        f"{bar:.3f}x, above this config's {speedup_high:.3f}x upper bound",
        speedup_high=round(speedup_high, 4),
        frontier_low=round(bar, 4),
    )


def _stopped_at(look: dict, why: str, **evidence) -> dict:
    """The evidence of a stop at an interim `look` (`dominated`, `decided`): what was seen,
    the stop's own numbers, and the reason in words."""
    seen, total = look["examples_seen"], look["examples_total"]
    return {
        "look": look["look"],
        "examples_seen": seen,
        "examples_total": total,
        "metric_so_far": look["metric_so_far"],
        "metric_ceiling": look["metric_ceiling"],
        **evidence,
        "reason": f"scored on {seen} of {total} examples: {why}",
    }


def decided(look: dict, max_drop: float | None) -> dict | None:
    """Why scoring may stop at this interim `look`: the drop's exact range over every example
    lies wholly within `max_drop` or wholly beyond it, so whether the config is an answer is
    settled (its exact metric is `search.completion`'s, if it ends on the frontier). None
    while the range straddles the bar."""
    if max_drop is None or "drop_high" not in look:
        return None
    low, high = look["drop_low"], look["drop_high"]
    if high <= max_drop + 1e-12:
        side = "within"
    elif low > max_drop + 1e-12:
        side = "beyond"
    else:
        return None
    return _stopped_at(
        look,
        f"the drop from fp32 on all of them lies in [{100 * low:.2f}, {100 * high:.2f}] "
        f"points, {side} --max-drop {100 * max_drop:g} point(s)",
        drop_low=low,
        drop_high=high,
        max_drop=max_drop,
    )
