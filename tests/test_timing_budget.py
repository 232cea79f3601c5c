"""One --timing-seconds per trial's whole timing phase: the fp32-under-these-options
measurement (once per set of options) takes a third of it, first, and the candidate the rest."""

from __future__ import annotations

import pytest

import search.objective as objective
from search.config import QuantConfig
from search.measure import TimingSettings, paired_speedup
from search.objective import Evaluator


@pytest.fixture
def budgets(monkeypatch):
    """The budget of every paired measurement an evaluator makes, in order."""
    seen: list[float] = []

    def recording(baseline, candidate, batches, settings, **kwargs):
        seen.append(settings.seconds)
        return paired_speedup(baseline, candidate, batches, settings, **kwargs)

    monkeypatch.setattr(objective, "paired_speedup", recording)
    return seen


def test_the_options_gain_and_the_candidate_share_one_budget(tiny_task, budgets):
    # target never met: every measurement runs to its budget, on a fast CPU as on a slow one
    timing = TimingSettings(seconds=0.6, warmup_runs=1, block_pairs=2, min_blocks=2, target=1e-9)
    evaluator = Evaluator(tiny_task, timing)
    try:
        options = QuantConfig(operators=("MatMul",), disabled_fusions=("SkipLayerNormFusion",))
        first = evaluator.evaluate(options)
        gain, candidate = budgets
        assert gain == pytest.approx(0.2)  # a third, measured first
        assert 0 <= candidate <= 0.6 - 0.2  # what the gain left (it ran at least its 0.2 s)
        assert first.attrs["fp32_options_speedup"] > 0

        budgets.clear()  # the same options again: the gain is known, the candidate gets all
        evaluator.evaluate(options.replace(per_channel=True))
        assert len(budgets) == 1 and budgets[0] > 0.59

        budgets.clear()  # default options: no gain to measure
        evaluator.evaluate(QuantConfig(operators=("MatMul",)))
        assert len(budgets) == 1 and budgets[0] > 0.59
    finally:
        evaluator.close()
