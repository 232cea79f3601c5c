"""One --timing-seconds per trial's whole timing phase: the fp32-under-these-options
measurement (once per set of options) is timed in the same interleaved run as the candidate,
and later trials with those options give the candidate the whole budget."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

import search.objective as objective
from search.config import QuantConfig
from search.interleave import interleaved_speedups, paired_speedup
from search.measure import TimingSettings
from search.objective import Evaluator


@dataclass
class Measured:
    """Every timing run an evaluator makes, in order: how many models it timed against fp32
    and its budget."""

    models: list[int] = field(default_factory=list)
    budgets: list[float] = field(default_factory=list)
    warm: list[bool] = field(default_factory=list)  # was fp32 warm when the run began?


@pytest.fixture
def measured(monkeypatch) -> Measured:
    seen = Measured()

    def paired(baseline, candidate, batches, settings, **kwargs):
        seen.models.append(1)
        seen.budgets.append(settings.seconds)
        seen.warm.append(kwargs.get("baseline_warm", False))
        return paired_speedup(baseline, candidate, batches, settings, **kwargs)

    def interleaved(baseline, candidates, batches, settings, **kwargs):
        seen.models.append(len(candidates))
        seen.budgets.append(settings.seconds)
        seen.warm.append(kwargs.get("baseline_warm", False))
        return interleaved_speedups(baseline, candidates, batches, settings, **kwargs)

    monkeypatch.setattr(objective, "paired_speedup", paired)
    monkeypatch.setattr(objective, "interleaved_speedups", interleaved)
    return seen


def test_the_options_gain_and_the_candidate_share_one_budget(tiny_task, measured):
    # target never met: every measurement runs its budget out, on a fast CPU as on a slow one
    timing = TimingSettings(seconds=0.6, warmup_runs=1, block_pairs=2, min_blocks=2, target=1e-9)
    evaluator = Evaluator(tiny_task, timing)
    try:
        options = QuantConfig(operators=("MatMul",), disabled_fusions=("SkipLayerNormFusion",))
        first = evaluator.evaluate(options)
        # one run times fp32 under the options and the candidate together, in one budget
        assert measured.models == [2] and measured.budgets == [pytest.approx(0.6)]
        # fp32's first warm-up is the worker's, made before the phase the budget bounds
        assert measured.warm == [True] and first.attrs["phase_seconds"]["load"] > 0
        gain = first.attrs["fp32_options_speedup"]
        assert gain > 0 and first.attrs["timing"]["pairs"] >= 2

        measured.models.clear(), measured.budgets.clear()
        second = evaluator.evaluate(options.replace(per_channel=True))  # the gain is known
        assert measured.models == [1] and measured.budgets == [pytest.approx(0.6)]
        assert second.attrs["fp32_options_speedup"] == gain

        measured.models.clear(), measured.budgets.clear()
        default = evaluator.evaluate(QuantConfig(operators=("MatMul",)))  # no gain to measure
        assert measured.models == [1] and measured.budgets == [pytest.approx(0.6)]
        assert default.attrs["fp32_options_speedup"] == 1.0
    finally:
        evaluator.close()


def test_confirmation_rounds_go_on_through_the_timing_batches(tiny_task):
    """Six short rounds that each began at the first batch would time only the first few."""
    evaluator = Evaluator(tiny_task, TimingSettings(seconds=0.2, min_blocks=2, block_pairs=1))
    configs = [QuantConfig(operators=("MatMul",)), QuantConfig(operators=("MatMul", "Gather"))]
    try:
        pairs = {c.key: 0 for c in configs}
        for _ in range(3):
            for config, speed in zip(configs, evaluator.retime_round(configs, 0.1), strict=True):
                assert evaluator._round_batch[config.key] == pairs[config.key] + speed.pairs
                pairs[config.key] += speed.pairs
        evaluator.end_rounds()
        assert evaluator._round_batch == {}  # the next pass starts afresh
    finally:
        evaluator.close()


def test_fresh_round_sessions_reopen_the_same_file_and_go_on_through_the_batches(
    tiny_task, monkeypatch
):
    """Each round on new sessions (so a session's own offset is drawn again), quantized once."""
    evaluator = Evaluator(tiny_task, TimingSettings(seconds=0.2, min_blocks=2, block_pairs=1))
    config = QuantConfig(operators=("MatMul",))
    quantized = []
    real_quantize = evaluator._quantize
    monkeypatch.setattr(
        evaluator, "_quantize", lambda *a, **k: quantized.append(1) or real_quantize(*a, **k)
    )
    try:
        sessions, pairs = [], 0
        for fresh in (False, True, True):
            (speed,) = evaluator.retime_round([config], 0.1, fresh_sessions=fresh)
            session, _, path = evaluator._rounds[config.key]
            sessions.append(session)  # kept alive, so no two share an id
            assert speed.ratio > 0 and path.exists()
            pairs += speed.pairs
            assert evaluator._round_batch[config.key] == pairs
        assert len({id(x) for x in sessions}) == 3 and quantized == [1]
        (kept,) = evaluator.retime_round([config], 0.1)  # not fresh: the same session again
        assert kept.ratio > 0 and evaluator._rounds[config.key][0] is session
    finally:
        evaluator.close()


def test_a_gain_the_budget_cannot_hold_is_left_unmeasured_and_not_tried_again(tiny_task, measured):
    # a budget shorter than two pairs on any CPU: only the candidate's measurement is made
    timing = TimingSettings(seconds=1e-4, warmup_runs=1, block_pairs=1, min_blocks=2)
    evaluator = Evaluator(tiny_task, timing)
    try:
        options = QuantConfig(operators=("MatMul",), disabled_fusions=("SkipLayerNormFusion",))
        first = evaluator.evaluate(options)
        assert measured.models == [2] and first.attrs["fp32_options_speedup"] is None
        assert first.attrs["timing"]["blocks"] == 1 and first.speedup > 0  # all it could hold
        measured.models.clear()
        again = evaluator.evaluate(options.replace(per_channel=True))
        assert measured.models == [1] and again.attrs["fp32_options_speedup"] is None
    finally:
        evaluator.close()


def test_a_round_with_direct_pairs_solves_each_config_from_all_its_pairs(tiny_task, monkeypatch):
    """span=1: each config against fp32 and the second against the first, in one run; each
    speedup solved from the three timings (`search.pair_graph`); a config whose timings all
    fail answers its reason and the other is still solved from its own."""
    import math

    import search.retime as retime
    from search.pair_graph import solve

    runs = []

    def spy(baseline, candidates, batches, settings, **kwargs):
        out = interleaved_speedups(baseline, candidates, batches, settings, **kwargs)
        runs.append((candidates, kwargs["references"], kwargs["first_batch"], out))
        return out

    monkeypatch.setattr(retime, "interleaved_speedups", spy)
    evaluator = Evaluator(tiny_task, TimingSettings(seconds=0.2, min_blocks=2, block_pairs=1))
    configs = [QuantConfig(operators=("MatMul",)), QuantConfig(operators=("MatMul", "Gather"))]
    try:
        first, second = evaluator.retime_round(configs, 0.2, span=1, rotate=1)
        ((cands, refs, starts, out),) = runs
        a, b = (evaluator._rounds[c.key][0] for c in configs)
        # turns rotated one place: b against fp32, b against a, a against fp32
        assert cands == [b, b, a] and refs == [None, a, None] and starts == [0, 0, 0]
        edges = [(0, 2), (1, 2), (0, 1)]
        levels, precision = solve(
            2, edges, [math.log(s.ratio) for s in out], [s.pairs for s in out]
        )
        assert [first.ratio, second.ratio] == pytest.approx([math.exp(x) for x in levels])
        assert [first.pairs, second.pairs] == [max(1, round(p)) for p in precision]
        assert second.pairs >= out[0].pairs and first.pairs >= out[2].pairs
        # each goes on from the most pairs any of its timings ran
        assert evaluator._round_batch[configs[1].key] == max(out[0].pairs, out[1].pairs)

        def failing(baseline, candidates, batches, settings, **kwargs):
            out = interleaved_speedups(baseline, candidates, batches, settings, **kwargs)
            return [
                "onnxruntime failed" if c is b else s for c, s in zip(candidates, out, strict=True)
            ]

        monkeypatch.setattr(retime, "interleaved_speedups", failing)
        kept, failed = evaluator.retime_round(configs, 0.2, span=1)
        assert failed == "onnxruntime failed" and kept.ratio > 0 and kept.pairs >= 1
    finally:
        evaluator.close()
