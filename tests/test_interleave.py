"""Several candidates timed in one run against fp32, taking turns a block at a time (fake time)."""

import math

import numpy as np
import pytest

from search.interleave import interleaved_speedups, paired_speedup
from search.measure import TimingSettings
from search.stats import Spread
from search.tasks.base import Batch
from tests.fake_timing import FakeClock, FakeProbe, FakeSession

BATCHES = [Batch({"x": np.zeros((4, 2))}, np.arange(4))]
TRUE = {"a": 2.0, "b": 2.5, "c": 1.6}  # fp32's 0.2 s over each candidate's run time


def slow_minutes(now: float) -> float:
    """A machine that slows by up to 30% and back over 20 s: fp32 (sensitivity 1) more than
    the int8 models (0.5), so the speedup itself moves with it."""
    return 1.0 + 0.15 * (1 - math.cos(2 * math.pi * now / 20))


def models(clock, log=None, jitter=0.01):
    base = FakeSession(clock, 0.2, jitter, seed=9, name="fp32", log=log)
    cands = [
        FakeSession(clock, 0.2 / r, jitter, seed=i, sensitivity=0.5, name=n, log=log)
        for i, (n, r) in enumerate(TRUE.items())
    ]
    return base, cands


def test_the_ratio_between_candidates_keeps_out_the_drift_that_slot_by_slot_timing_keeps():
    settings = TimingSettings(seconds=6.0, target=1e-6, floor=0.0)
    clock = FakeClock(slow_minutes)
    base, cands = models(clock)
    speeds = interleaved_speedups(
        base,
        cands,
        BATCHES,
        TimingSettings(seconds=18.0, target=1e-6, floor=0.0),
        clock=clock,
        probe=FakeProbe(()),
    )
    interleaved = [s.ratio for s in speeds]
    # The same three, 6 s each one after another (a round of the slot-by-slot confirmation).
    clock = FakeClock(slow_minutes)
    base, cands = models(clock)
    slots = [
        paired_speedup(base, c, BATCHES, settings, clock=clock, probe=FakeProbe(())).ratio
        for c in cands
    ]
    truth = [TRUE["b"] / TRUE["a"], TRUE["c"] / TRUE["a"]]

    def worst(ratios):
        return max(abs(math.log(r / ratios[0] / t)) for r, t in zip(ratios[1:], truth, strict=True))

    assert worst(interleaved) < 0.01  # within 1%: every candidate saw the same minutes
    assert worst(slots) > 3 * worst(interleaved)  # the slots' minutes differ, so does the drift


def test_candidates_take_turns_a_block_at_a_time_each_block_abba_pairs_against_fp32():
    log: list[str] = []
    clock = FakeClock()
    base, cands = models(clock, log)
    settings = TimingSettings(seconds=12.0, target=1e-6, floor=0.0, warmup_runs=0)
    speeds = interleaved_speedups(base, cands, BATCHES, settings, clock=clock, probe=FakeProbe(()))
    size = speeds[0].block_size
    assert size == 3  # 3 pairs of ~0.3 s: four turns of everyone fit in 12 s many times
    turns = [log[i : i + 2 * size] for i in range(0, len(log), 2 * size)]
    owners = [next(n for n in turn if n != "fp32") for turn in turns]
    for turn, owner in zip(turns, owners, strict=True):
        assert sorted(set(turn)) == sorted({"fp32", owner})  # a block: one candidate, fp32
    # turns go a, b, c, a, b, c, ...; each candidate's pairs alternate which runs first
    assert owners == [("a", "b", "c")[i % 3] for i in range(len(owners))]
    for name in ("a", "b", "c"):
        runs = [r for turn, o in zip(turns, owners, strict=True) if o == name for r in turn]
        pairs = [runs[i : i + 2] for i in range(0, len(runs), 2)]
        assert all(
            p == (["fp32", name] if i % 2 == 0 else [name, "fp32"]) for i, p in enumerate(pairs)
        )
    assert len({s.blocks for s in speeds}) <= 2  # the run may end between two turns
    for s, truth in zip(speeds, TRUE.values(), strict=True):
        assert s.low <= truth <= s.high


def test_the_budget_holds_for_the_whole_run_warm_up_included():
    settings = TimingSettings(seconds=10.0, target=1e-6, floor=0.0)
    clock = FakeClock()
    base, cands = models(clock)
    speeds = interleaved_speedups(base, cands, BATCHES, settings, clock=clock, probe=FakeProbe(()))
    block = (0.2 + 0.2 / min(TRUE.values())) * speeds[0].block_size  # the slowest's block
    assert 10.0 - block <= clock.now <= 10.0 + block  # at most one block over
    assert all(s.stopped == "budget" and s.blocks >= 4 for s in speeds)


def test_a_pair_longer_than_the_budget_is_timed_once_and_ends_within_one_block():
    """fp32 8 s and int8 7 s a batch (a BERT-base-size pair on an AMD Zen 1 took 14-15 s): a
    second block would end 18 s past a 12 s budget, so timing stops after the first, one
    block over at most, and its one block carries the drift floor doubled (no spread to
    read). A pair that fits twice within one block of the budget still gets its two."""
    settings = TimingSettings(seconds=12, target=1e-6)
    clock = FakeClock()
    base, cand = FakeSession(clock, 8.0, 0.02, seed=1), FakeSession(clock, 7.0, 0.02, seed=2)
    warm = {"clock": clock, "probe": FakeProbe(()), "baseline_warm": True}  # as a worker's is
    speed = paired_speedup(base, cand, BATCHES, settings, **warm)
    assert speed.blocks == 1 and speed.pairs == 1 and speed.stopped == "budget"
    assert clock.now <= 12 + 15  # the candidate's warm-up and one pair: one block over at most
    assert speed.low == pytest.approx(speed.ratio / 1.05**2)
    assert speed.high == pytest.approx(speed.ratio * 1.05**2)
    assert speed.low <= 8 / 7 <= speed.high
    # ~4 s a pair: after the warm-up and one block 6.5 s of 12 are spent, so a second is timed
    clock = FakeClock()
    base, cand = FakeSession(clock, 2.5, 0.02, seed=1), FakeSession(clock, 1.5, 0.02, seed=2)
    speed = paired_speedup(base, cand, BATCHES, settings, **(warm | {"clock": clock}))
    assert speed.blocks >= 2 and clock.now <= 12 + 4 * 1.1


class Broken:
    def __init__(self, after: int):
        self.after = after

    def run(self, _names, _inputs):
        self.after -= 1
        if self.after < 0:
            raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : bad shape\ndetail")


def test_a_trial_timing_whose_candidate_fails_raises_what_onnxruntime_raised():
    clock = FakeClock()
    with pytest.raises(RuntimeError, match="bad shape"):
        paired_speedup(
            FakeSession(clock, 0.2),
            Broken(after=4),
            BATCHES,
            TimingSettings(seconds=6.0),
            clock=clock,
            probe=FakeProbe(()),
        )


def test_a_candidate_that_fails_answers_its_reason_and_the_others_are_still_timed():
    clock = FakeClock()
    base, cands = models(clock)
    settings = TimingSettings(seconds=6.0, target=1e-6, floor=0.0)
    speeds = interleaved_speedups(
        base,
        [cands[0], Broken(after=5), cands[2]],
        BATCHES,
        settings,
        clock=clock,
        probe=FakeProbe(()),
    )
    assert isinstance(speeds[1], str) and "bad shape" in speeds[1] and "\n" not in speeds[1]
    assert speeds[0].low <= TRUE["a"] <= speeds[0].high
    assert speeds[2].low <= TRUE["c"] <= speeds[2].high


def test_a_bert_base_size_trial_times_its_options_gain_and_itself_within_the_budget():
    """fp32 1.2 s, fp32 under the trial's options 1.1 s, the int8 candidate 0.5 s a batch:
    one interleaved run of both, 12 s warm-up included, ends within one block of 12 s
    (before, two measurements of their own warm-up and two blocks each took ~14.4 s)."""
    settings = TimingSettings(seconds=12, target=1e-6)  # with the drift floor, as trials are
    clock = FakeClock()
    base = FakeSession(clock, 1.2, 0.02, seed=1)
    options = FakeSession(clock, 1.1, 0.02, seed=2)
    cand = FakeSession(clock, 0.5, 0.02, seed=3)
    gain, speed = interleaved_speedups(
        base, [options, cand], BATCHES, settings, clock=clock, probe=FakeProbe(())
    )
    block = (1.2 + 1.1) * 1.1  # the slower block (fp32, fp32 under the options), with jitter
    assert speed.block_size == 1 and speed.blocks >= 2 and abs(gain.blocks - speed.blocks) <= 1
    assert clock.now <= 12 + block
    assert gain.low <= 1.2 / 1.1 <= gain.high and speed.low <= 1.2 / 0.5 <= speed.high


def test_racing_stops_once_the_candidate_with_a_bar_cannot_reach_it():
    settings = TimingSettings(seconds=60, target=1e-6, floor=0.05)
    clock = FakeClock()
    base, cands = models(clock, jitter=0.02)
    gain, speed = interleaved_speedups(
        base,
        cands[:2],
        BATCHES,
        settings,
        clock=clock,
        probe=FakeProbe(()),
        race_below=(None, 3.0),  # b is 2.5x: it cannot reach 3.0
    )
    assert speed.stopped == gain.stopped == "raced" and speed.race_below == 3.0
    assert gain.race_below is None and speed.high < 3.0 and clock.now < 30
    clock = FakeClock()
    base, cands = models(clock, jitter=0.02)
    full = interleaved_speedups(
        base,
        cands[:2],
        BATCHES,
        settings,
        clock=clock,
        probe=FakeProbe(()),
        race_below=(None, 2.0),
    )
    assert full[1].stopped == "budget"  # 2.5x could reach 2.0: no early stop


class Recording(FakeSession):
    """Records the batch (its first value) of every run."""

    def __init__(self, clock, seconds, seen):
        super().__init__(clock, seconds)
        self.seen = seen

    def run(self, names, inputs):
        self.seen.append(int(inputs["x"][0, 0]))
        super().run(names, inputs)


def test_each_candidate_starts_at_its_own_batch_and_goes_on_through_them():
    batches = [Batch({"x": np.full((4, 2), i)}, np.arange(4)) for i in range(8)]
    clock = FakeClock()
    seen_a: list[int] = []
    seen_b: list[int] = []
    a, b = Recording(clock, 0.1, seen_a), Recording(clock, 0.1, seen_b)
    settings = TimingSettings(seconds=3.0, target=1e-6, floor=0.0, warmup_runs=0)
    speeds = interleaved_speedups(
        FakeSession(clock, 0.2),
        [a, b],
        batches,
        settings,
        clock=clock,
        probe=FakeProbe(()),
        first_batch=[3, 6],
    )
    assert seen_a == [(3 + i) % 8 for i in range(speeds[0].pairs)]
    assert seen_b == [(6 + i) % 8 for i in range(speeds[1].pairs)]


def test_an_optional_candidate_the_budget_cannot_hold_is_left_untimed():
    """fp32 2.5 s a batch (a BERT-base-size model on a slow CPU): after the warm-up, two
    blocks of (fp32, fp32 under new options) and two of (fp32, candidate) need ~17 s of a
    12 s budget, so the optional gain is dropped and the candidate keeps the budget."""
    settings = TimingSettings(seconds=12, target=1e-6)
    clock = FakeClock()
    base = FakeSession(clock, 2.5, 0.02, seed=1)
    options = FakeSession(clock, 2.5, 0.02, seed=2, name="options", log=(log := []))
    cand = FakeSession(clock, 0.9, 0.02, seed=3)
    gain, speed = interleaved_speedups(
        base,
        [options, cand],
        BATCHES,
        settings,
        clock=clock,
        probe=FakeProbe(()),
        optional=(True, False),
    )
    assert gain is None and log == []  # not even warmed up
    assert speed.blocks >= 2 and speed.low <= 2.5 / 0.9 <= speed.high
    assert clock.now <= 12 + (2.5 + 0.9) * 1.1  # at most one block over
    # The same on a small model: both fit, both are timed.
    clock = FakeClock()
    base, cands = models(clock)
    gain, speed = interleaved_speedups(
        base,
        cands[:2],
        BATCHES,
        settings,
        clock=clock,
        probe=FakeProbe(()),
        optional=(True, False),
    )
    assert gain.blocks >= 2 and speed.blocks >= 2


def test_a_lent_block_spread_lets_a_two_block_trial_race():
    """A BERT-base-size trial holds two one-pair blocks in its budget: with one degree of
    freedom its interval cannot rule out a 1.75x bar for a 1.5x config, so it is timed to the
    budget. With the spread of the worker's earlier trials lent (the evaluator's `spread`,
    per pairs per block) it races, and its record says how many degrees were lent."""
    settings = TimingSettings(seconds=12, target=1e-6, floor=0.05)

    def trial(priors):
        clock = FakeClock()
        base = FakeSession(clock, 2.4, 0.03, seed=4)
        cand = FakeSession(clock, 1.6, 0.03, seed=5)
        return paired_speedup(
            base, cand, BATCHES, settings, clock, FakeProbe(()), race_below=1.75, priors=priors
        )

    alone = trial(None)
    assert alone.block_size == 1 and alone.stopped == "budget" and alone.high > 1.75
    assert alone.spread_df == 0 and len(alone.block_logs) == alone.blocks
    lent = {1: Spread(ss=0.0005 * 40, df=40)}  # block log ratios of sd ~0.022
    raced = trial(lent)
    assert raced.stopped == "raced" and raced.high < 1.75 and raced.spread_df == 40
    assert raced.low <= 1.5 <= raced.high
    assert trial({3: lent[1]}).stopped == "budget"  # another block size lends nothing


def test_a_candidate_with_a_reference_is_timed_against_it_with_no_warm_up_of_its_own():
    """A confirmation round's direct pair: b against a, ABBA, no fp32 in its blocks; a and b
    are warmed by their own turns against fp32, not again."""
    log: list[str] = []
    clock = FakeClock()
    base, (a, b, _) = models(clock, log)
    settings = TimingSettings(seconds=12.0, target=1e-6, floor=0.0, block_pairs=1)
    speeds = interleaved_speedups(
        base,
        [a, b, b],
        BATCHES,
        settings,
        clock=clock,
        probe=FakeProbe(()),
        references=[None, None, a],
        first_batch=[0, 0, 1],
    )
    assert log[:3] == ["fp32", "a", "b"]  # one warm-up run each
    turns = [log[i : i + 2] for i in range(3, len(log), 2)]
    direct = turns[2::3]  # the third candidate's turns: one pair a block
    assert all(sorted(t) == ["a", "b"] for t in direct)
    # its pairs alternate from its first batch on: batch 1 runs the candidate first
    assert [t[0] for t in direct[:4]] == ["b", "a", "b", "a"]
    assert speeds[2].ratio == pytest.approx(TRUE["b"] / TRUE["a"], rel=0.01)
    assert speeds[0].ratio == pytest.approx(TRUE["a"], rel=0.01)
