"""Multi-objective ranking of finished trials: Pareto fronts and the beam's documented order.

Both objectives (accuracy, speedup) are maximized. The beam keeps configs in this order:

1. configs whose accuracy drop from fp32 is within the tolerance (`--max-drop`, default 1
   point) come first, fastest first; configs whose speedup intervals overlap are ties
   (`search.stats.tie_groups`), and a tie is broken by accuracy, then speedup;
2. then the configs that lose more, by Pareto front (non-dominated sorting: front 0 is the
   frontier of those configs, front 1 the frontier once front 0 is removed, ...), then by
   speedup, then by accuracy.

So the beam follows the fastest accurate configs, and when fewer than K are accurate it keeps
the best trade-offs among the rest. The report's frontier is still the full Pareto set.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from search.stats import tie_groups


def within_drop(accuracy, fp32_accuracy: float, max_drop: float):
    """Whether `accuracy` (a number or a pandas column) is within `max_drop` of fp32's:
    the one tolerance test the beam, the report, `show`'s progress and `export --best` share."""
    return fp32_accuracy - accuracy <= max_drop + 1e-12


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(x >= y for x, y in zip(a, b, strict=True)) and any(
        x > y for x, y in zip(a, b, strict=True)
    )


def pareto_fronts(points: Sequence[Sequence[float]]) -> list[int]:
    """Front index of each point under maximization (0 = non-dominated)."""
    if len(points) == 0:
        return []
    pts = np.asarray(points, dtype=float).reshape(len(points), -1)
    n = len(pts)
    front = [-1] * n
    remaining = set(range(n))
    level = 0
    while remaining:
        current = [
            i for i in remaining if not any(dominates(pts[j], pts[i]) for j in remaining if j != i)
        ]
        for i in current:
            front[i] = level
        remaining -= set(current)
        level += 1
    return front


def non_dominated(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the non-dominated points."""
    return [i for i, f in enumerate(pareto_fronts(points)) if f == 0]


def beam_order(
    points: Sequence[tuple[float, float]],
    fp32_accuracy: float,
    max_drop: float,
    intervals: Sequence[tuple[float, float]] | None = None,
) -> list[int]:
    """Indices of (accuracy, speedup) points in the beam's order (best first);
    `intervals` are the speedups' (low, high), for ties (none given: no ties)."""
    accurate = [within_drop(a, fp32_accuracy, max_drop) for a, _ in points]
    rest = [i for i in range(len(points)) if not accurate[i]]
    fronts = dict(zip(rest, pareto_fronts([points[i] for i in rest]), strict=True))
    good = [i for i in range(len(points)) if accurate[i]]
    spans = intervals or [(s, s) for _, s in points]
    ties = dict(zip(good, tie_groups([(points[i][1], *spans[i]) for i in good]), strict=True))

    def key(i: int) -> tuple:
        accuracy, speedup = points[i]
        if accurate[i]:
            return (0, ties[i], -accuracy, -speedup)
        return (1, fronts[i], -speedup, -accuracy)

    return sorted(range(len(points)), key=key)
