"""Speedups from a graph of paired timings: in a confirmation round each candidate is timed
against fp32 and, directly, against its neighbours in rank; least squares over all those
pairs gives each candidate's speedup over fp32.

Why: what a confirmation must decide is the order of close candidates, and the ratio of two
candidates read through fp32 carries two pairs' noise (A against fp32, B against fp32) and
pays for two fp32 runs. An ABBA pair of A against B carries one pair's noise, runs no fp32
(the slowest model), and on a 2-core AMD EPYC Zen 3 VM spread no more than a pair against
fp32 (9.2% against 8.7% and 7.9%): the same precision of their ratio took 1/4.3-1/5.1 of the
seconds (`benchmarks/direct_pairs.py`). The pairs against fp32 stay, for the speedups
themselves; each candidate's level then draws on every pair of the round, its ratio to a
neighbour mostly on their direct pairs. In the confirmation benchmark on the same VM (10
repeats of 4 configs, 36 s each), the ratios between configs spread across repeats with
CVs of 0.79-1.26%, against 1.34-2.58% from pairs against fp32 alone in the same run.

Nodes: 0 is fp32, node i + 1 the i-th candidate. An edge (a, b) measured `ratio` means
b's speedup over a's (a is the reference, timed as the baseline is). Each edge's log ratio
is weighted by its pairs: every pair, either kind, is taken as equally noisy (measured above).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np

from search.measure import Speedup

Edge = tuple[int, int]  # (reference node, candidate node); node 0 is fp32


def rank_edges(count: int, span: int) -> list[Edge]:
    """Every candidate against fp32, then each against the next `span` candidates in rank
    (candidates given fastest first): neighbours in rank are the pairs whose order is in
    doubt. Up to `span` + 1 candidates, every two are timed directly."""
    star = [(0, i) for i in range(1, count + 1)]
    direct = [(a, b) for a in range(1, count + 1) for b in range(a + 1, min(count, a + span) + 1)]
    return star + direct


def solve(
    count: int, edges: Sequence[Edge], logs: Sequence[float], pairs: Sequence[int]
) -> tuple[list[float], list[float]]:
    """Each candidate's log speedup over fp32, by least squares weighted by pairs, and its
    precision in pairs against fp32: the count of fp32 pairs alone that would read it as
    closely (1 / the variance in units of one pair's). Every candidate must reach fp32
    through the edges (each has its own edge to fp32 in a confirmation round)."""
    design = np.zeros((len(edges), count))
    for row, (a, b) in enumerate(edges):
        if a:
            design[row, a - 1] -= 1.0
        if b:
            design[row, b - 1] += 1.0
    weights = np.asarray(pairs, dtype=float)
    normal = design.T @ (design * weights[:, None])
    if np.linalg.matrix_rank(normal) < count:
        raise ValueError("every candidate must be timed against fp32 or another candidate")
    covariance = np.linalg.inv(normal)
    levels = covariance @ design.T @ (weights * np.asarray(logs, dtype=float))
    return [float(x) for x in levels], [1.0 / float(v) for v in np.diag(covariance)]


def solved_speeds(count: int, measured: Mapping[Edge, Speedup | str]) -> list[Speedup | str]:
    """Each candidate's speedup from a round's timings (`measured`, by edge; a string where
    that timing failed): a candidate whose timing against fp32 failed answers its reason;
    the others are solved from every timing among them that did not fail. Each keeps its own
    timing against fp32 for what the solution does not give (samples per second, latencies),
    with the solved speedup, its interval recentred there, `pairs` as the pairs against fp32
    of the same precision, and `loaded` when any of its timings ran under load."""
    out: list[Speedup | str] = [measured[(0, b)] for b in range(1, count + 1)]
    live = [b for b in range(1, count + 1) if not isinstance(out[b - 1], str)]
    if not live:
        return out
    number = {node: n for n, node in enumerate(live, start=1)}
    number[0] = 0
    edges, logs, pairs = [], [], []
    for (a, b), speed in measured.items():
        if not isinstance(speed, str) and a in number and b in number:
            edges.append((number[a], number[b]))
            logs.append(math.log(speed.ratio))
            pairs.append(speed.pairs)
    levels, precision = solve(len(live), edges, logs, pairs)
    for node, level, fp32_pairs in zip(live, levels, precision, strict=True):
        own = out[node - 1]
        centre = math.exp(level)
        # its own timing against fp32 is one of the edges that hold it
        loaded = any(
            not isinstance(s, str) and s.loaded and node in edge for edge, s in measured.items()
        )
        out[node - 1] = replace(
            own,
            ratio=centre,
            low=own.low * centre / own.ratio,
            high=own.high * centre / own.ratio,
            pairs=max(1, round(fp32_pairs)),
            loaded=loaded,
        )
    return out
