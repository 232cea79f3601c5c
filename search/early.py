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

    def __post_init__(self) -> None:
        if not 0 <= self.drop <= 1:
            raise QsearchError(f"--prune-drop must be a fraction in [0, 1], but got {self.drop}")
        if not 0 < self.alpha < 1:
            raise QsearchError(f"prune alpha must be in (0, 1), but got {self.alpha}")

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


def look_evidence(
    hits: np.ndarray, total: int, threshold: float, alpha_look: float, look: int, looks: int
) -> dict:
    """The numbers behind one interim look: what was seen and the bound on the full set."""
    seen, correct = len(hits), int(hits.sum())
    ceiling = population_upper_bound(correct, seen, total, alpha_look) / total
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
    }


def race_bar(frontier: Sequence[tuple[float, float]], accuracy: float) -> float | None:
    """The highest speedup lower bound among points at least as accurate as `accuracy`:
    a config whose speedup upper bound stays below it cannot reach the frontier (None: no
    such point)."""
    lows = [low for acc, low in frontier if acc >= accuracy - 1e-12]
    return max(lows) if lows else None
