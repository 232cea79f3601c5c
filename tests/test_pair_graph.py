"""Speedups solved from a confirmation round's pairs: each candidate against fp32 and
against its neighbours in rank (`search.pair_graph`), exact on known pairs and, in fake
time, closer on the ratio of two candidates than pairs through fp32 alone."""

import math

import numpy as np
import pytest

from search.interleave import interleaved_speedups
from search.measure import TimingSettings
from search.pair_graph import rank_edges, solve
from search.tasks.base import Batch
from tests.fake_timing import FakeClock, FakeProbe, FakeSession


def test_each_candidate_meets_fp32_and_the_next_span_candidates_in_rank():
    assert rank_edges(3, 0) == [(0, 1), (0, 2), (0, 3)]
    assert rank_edges(4, 1) == [(0, 1), (0, 2), (0, 3), (0, 4), (1, 2), (2, 3), (3, 4)]
    every_two = [(1, 2), (1, 3), (1, 4), (2, 3), (2, 4), (3, 4)]
    assert rank_edges(4, 3)[4:] == every_two == rank_edges(4, 9)[4:]


def test_pairs_that_agree_are_solved_exactly():
    levels = [0.9, 0.7, 0.75]  # each candidate's log speedup over fp32
    edges = rank_edges(3, 2)
    logs = [levels[b - 1] - (levels[a - 1] if a else 0.0) for a, b in edges]
    solved, precision = solve(3, edges, logs, [5] * len(edges))
    assert solved == pytest.approx(levels)
    assert all(p > 5 for p in precision)  # more than its own 5 pairs against fp32


def test_the_solution_is_least_squares_weighted_by_pairs():
    edges = [(0, 1), (0, 2), (1, 2)]
    logs, pairs = [0.50, 0.30, -0.10], [4, 6, 10]
    solved, precision = solve(2, edges, logs, pairs)
    design = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 1.0]])
    root = np.sqrt(pairs)[:, None]
    expected = np.linalg.lstsq(design * root, np.asarray(logs) * root[:, 0], rcond=None)[0]
    assert solved == pytest.approx(expected)
    # alone against fp32 each would be read by its own pairs; the direct ones add to both
    assert solve(2, edges[:2], logs[:2], pairs[:2])[1] == pytest.approx([4, 6])
    covariance = np.linalg.inv(design.T @ (design * np.asarray(pairs, float)[:, None]))
    assert precision == pytest.approx(1 / np.diag(covariance))


def test_a_candidate_no_pair_reaches_is_refused():
    with pytest.raises(ValueError, match="every candidate"):
        solve(2, [(0, 1)], [0.5], [3])


BATCHES = [Batch({"x": np.zeros((4, 2))}, np.arange(4))]


def _ratio_of_two(span: int, seed: int) -> float:
    """Log ratio of candidate a (2.0x) to b (2.1x) from one 30 s run of fake time: each
    run's time jitters by 8%, so a pair spreads ~11%, as on a 2-core AMD EPYC Zen 3 VM."""
    clock = FakeClock()
    base = FakeSession(clock, 0.2, 0.08, seed=seed, name="fp32")
    a = FakeSession(clock, 0.2 / 2.0, 0.08, seed=seed + 1000, name="a")
    b = FakeSession(clock, 0.2 / 2.1, 0.08, seed=seed + 2000, name="b")
    nodes = [None, a, b]
    edges = rank_edges(2, span)
    speeds = interleaved_speedups(
        base,
        [nodes[y] for _, y in edges],
        BATCHES,
        TimingSettings(seconds=30.0, target=1e-6, floor=0.0, block_pairs=1),
        clock=clock,
        probe=FakeProbe(()),
        references=[nodes[x] for x, _ in edges],
    )
    levels, _ = solve(2, edges, [math.log(s.ratio) for s in speeds], [s.pairs for s in speeds])
    return levels[0] - levels[1]


def test_direct_pairs_read_two_candidates_ratio_more_closely_in_the_same_seconds():
    """Through fp32 the ratio carries two pairs' noise and two fp32 runs; a direct pair one
    pair's and no fp32 run: in the same seconds its spread over 40 runs is about 2/3."""
    through_fp32 = [_ratio_of_two(0, seed) for seed in range(40)]
    direct = [_ratio_of_two(1, seed) for seed in range(40)]
    truth = math.log(2.0 / 2.1)
    assert abs(np.mean(direct) - truth) < 0.01 and abs(np.mean(through_fp32) - truth) < 0.015
    assert np.std(direct) < 0.8 * np.std(through_fp32)
