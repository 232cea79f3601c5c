"""Statistics of speed and accuracy, on synthetic data with known answers (no timing)."""

import math

import numpy as np
import pytest

from search.interleave import paired_speedup
from search.measure import TimingSettings
from search.stats import (
    Spread,
    block_estimate,
    mcnemar_exact,
    paired_accuracy_difference,
    tie_groups,
)
from search.tasks.base import Batch
from tests.fake_timing import FakeClock, FakeProbe, FakeSession


def test_block_interval_covers_the_true_ratio_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    hits = 0
    for _ in range(400):
        logs = rng.normal(math.log(2.0), 0.05, size=8)
        est = block_estimate(logs)
        hits += est.low <= 2.0 <= est.high
    assert 0.91 <= hits / 400 <= 0.99


def test_block_interval_widens_with_spread_and_never_below_the_floor():
    rng = np.random.default_rng(2)
    tight = block_estimate(rng.normal(0.5, 0.01, 10))
    wide = block_estimate(rng.normal(0.5, 0.10, 10))
    assert wide.rel_half_width > 3 * tight.rel_half_width
    flat = block_estimate([0.5] * 6, floor=0.015)
    assert flat.rel_half_width == pytest.approx(0.015, rel=0.02)


BATCHES = [Batch({"x": np.zeros((4, 2))}, np.arange(4))]


def measure(jitter, settings, loads=(), race_below=None):
    clock = FakeClock()
    base = FakeSession(clock, 0.2, jitter, seed=1)
    cand = FakeSession(clock, 0.1, jitter, seed=2)
    probe = FakeProbe(loads)
    return paired_speedup(
        base, cand, BATCHES, settings, clock=clock, probe=probe, race_below=race_below
    )


def test_timing_stops_at_the_target_when_runs_are_steady():
    result = measure(0.005, TimingSettings(seconds=60, target=0.02, floor=0.0))
    assert result.stopped == "target" and result.blocks == 4
    assert result.low <= 2.0 <= result.high
    assert result.seconds < 60


def test_timing_runs_to_the_budget_when_runs_are_noisy():
    result = measure(0.3, TimingSettings(seconds=20, target=0.02, floor=0.0))
    # the budget, less at most one block (3 pairs of ~0.3 s) that would have ended past it
    assert result.stopped == "budget" and 18 <= result.warmup_seconds + result.seconds <= 20
    assert result.rel_half_width > 0.02


def test_loaded_blocks_are_flagged_left_out_and_replaced():
    loads = [0.0, 0.9, 0.0, 0.9, 0.0, 0.0, 0.0, 0.0]
    result = measure(0.005, TimingSettings(seconds=60, target=0.02, floor=0.0), loads)
    assert result.loaded and result.loaded_blocks == 2
    assert result.blocks == 6  # timing went on until four clean blocks
    assert result.stopped == "target"


def test_a_measurement_under_load_throughout_is_widened():
    settings = TimingSettings(seconds=5, target=0.02, floor=0.0)
    clean = measure(0.05, settings)
    loaded = measure(0.05, settings, loads=[0.9] * 1000)
    assert loaded.loaded and not clean.loaded
    assert loaded.rel_half_width > 1.5 * clean.rel_half_width


def test_latency_objective_reports_percentiles():
    result = measure(0.01, TimingSettings(seconds=30, objective="latency", floor=0.0))
    assert result.baseline_p50_ms == pytest.approx(200, rel=0.05)
    assert result.candidate_p90_ms >= result.candidate_p50_ms
    assert result.ratio == pytest.approx(2.0, rel=0.02)


class CountingSession(FakeSession):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.runs = 0

    def run(self, names, inputs):
        self.runs += 1
        super().run(names, inputs)


def test_a_warm_baseline_skips_its_warm_up_and_both_are_timed_alike():
    settings = TimingSettings(seconds=60, target=0.02, floor=0.0, warmup_runs=2)
    counts = {}
    for warm in (False, True):
        clock = FakeClock()
        base = CountingSession(clock, 0.2, 0.005, seed=1)
        cand = CountingSession(clock, 0.1, 0.005, seed=2)
        result = paired_speedup(
            base, cand, BATCHES, settings, clock=clock, probe=FakeProbe(()), baseline_warm=warm
        )
        assert result.ratio == pytest.approx(2.0, rel=0.01)
        counts[warm] = (base.runs - result.pairs, cand.runs - result.pairs)
    assert counts == {False: (2, 2), True: (0, 2)}  # untimed runs: baseline, candidate


def test_ties_group_overlapping_intervals_best_first():
    intervals = [(2.0, 1.95, 2.05), (1.97, 1.90, 2.02), (1.5, 1.45, 1.55), (1.52, 1.49, 1.56)]
    groups = tie_groups(intervals)
    assert groups[0] == groups[1] == 0
    assert groups[2] == groups[3] == 1


def test_mcnemar_and_paired_difference():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(10, 10) == pytest.approx(1.0)
    assert mcnemar_exact(0, 10) == pytest.approx(2 / 1024)
    fp32 = np.array([1] * 900 + [0] * 100)
    cand = fp32.copy()
    cand[:30] = 0  # loses 30 examples the fp32 model got right
    d = paired_accuracy_difference(cand, fp32)
    assert d.diff == pytest.approx(-0.03)
    assert d.high < 0 and d.discordant == 30 and d.mcnemar_p < 1e-6
    # the paired interval is much narrower than two independent accuracy intervals
    independent = 2 * 1.96 * math.sqrt(2 * 0.9 * 0.1 / 1000)
    assert d.high - d.low < independent / 2


def test_racing_stops_once_the_upper_bound_is_below_the_frontier_and_stays_honest():
    settings = TimingSettings(seconds=60, target=0.001, floor=0.05)
    raced = measure(0.02, settings, race_below=2.5)  # the true ratio is 2.0
    assert raced.stopped == "raced" and raced.race_below == 2.5
    assert raced.high < 2.5 and raced.low <= 2.0 <= raced.high
    full = measure(0.02, settings)
    assert full.stopped == "budget" and raced.blocks < full.blocks
    assert raced.high - raced.low >= full.high - full.low  # fewer blocks: only wider
    assert measure(0.02, settings, race_below=1.5).stopped == "budget"  # could reach it


def test_a_model_whose_pair_takes_seconds_keeps_the_budget_warm_up_included():
    """A BERT-base-size pair (here 2 s of fake time): blocks shrink to one pair and timing
    stops after the block that reaches the budget; before, 4 blocks of 3 pairs took 24 s."""
    settings = TimingSettings(seconds=12, target=1e-6, floor=0.0)  # the target is never met
    clock = FakeClock()
    base = FakeSession(clock, 1.4, 0.05, seed=1)
    cand = FakeSession(clock, 0.6, 0.05, seed=2)
    result = paired_speedup(base, cand, BATCHES, settings, clock=clock, probe=FakeProbe(()))
    assert result.block_size == 1 and result.stopped == "budget"
    assert result.warmup_seconds == pytest.approx(2.0, rel=0.2)
    one_block = 2.0 * 1.3  # a pair, with jitter
    assert 12 - one_block <= result.warmup_seconds + result.seconds <= 12 + one_block
    assert result.blocks >= 2 and result.low <= 1.4 / 0.6 <= result.high


def test_a_small_model_keeps_its_block_size():
    result = measure(0.005, TimingSettings(seconds=60, target=0.02, floor=0.0))
    assert result.block_size == 3  # 0.3 s pairs: 4 blocks of 3 fit many times in 60 s
    # 2 s, 0.3 s warm-up: (2 - 0.3) / (4 blocks x 0.3 s) = 1 pair per block
    tight = measure(0.005, TimingSettings(seconds=2.0, target=1e-6, floor=0.0))
    assert tight.block_size == 1 and tight.blocks >= 4
    assert 2.0 - 0.31 <= tight.warmup_seconds + tight.seconds <= 2.0 + 0.31


def test_a_lent_spread_pools_the_block_variance_of_earlier_timings():
    logs = [0.50, 0.52]  # two blocks: one degree of freedom of their own
    own = block_estimate(logs)
    assert math.log(own.high / own.ratio) == pytest.approx(12.706 * 0.01)  # t(1) * s / sqrt(2)
    assert block_estimate(logs, prior=Spread()) == own  # nothing lent: the same interval
    lent = Spread().add([0.0, 0.1, -0.1, 0.0])  # ss 0.02 over 3 df
    assert (lent.ss, lent.df) == (pytest.approx(0.02), 3)
    assert Spread().add([0.3]) == Spread()  # one block has no spread to lend
    pooled = block_estimate(logs, prior=lent)
    variance = (0.0002 + 0.02) / 4
    assert pooled.ratio == own.ratio and pooled.blocks == 2
    assert math.log(pooled.high / pooled.ratio) == pytest.approx(2.776 * math.sqrt(variance / 2))
    # one block: still the caller's rule (the drift floor, doubled), nothing borrowed
    assert math.isinf(block_estimate([0.5], prior=lent).high)


def test_two_block_intervals_with_a_lent_spread_cover_and_are_far_narrower():
    """Trials of two blocks each, the block spread of twenty earlier ones lent: the
    intervals still cover the true ratio about 95% of the time, at a fraction of the width
    that one degree of freedom of their own gives."""
    rng = np.random.default_rng(2)
    lent = Spread()
    for _ in range(20):
        lent = lent.add(rng.normal(math.log(2.0), 0.05, size=2))
    hits, widths, own_widths = 0, [], []
    for _ in range(400):
        logs = rng.normal(math.log(2.0), 0.05, size=2)
        est, own = block_estimate(logs, prior=lent), block_estimate(logs)
        hits += est.low <= 2.0 <= est.high
        widths.append(math.log(est.high / est.low))
        own_widths.append(math.log(own.high / own.low))
    assert 0.91 <= hits / 400 <= 0.99
    assert np.median(widths) < 0.3 * np.median(own_widths)
