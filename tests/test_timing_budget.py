"""One --timing-seconds per trial's whole timing phase: the fp32-under-these-options
measurement (once per set of options) takes a third of it, first, and the candidate the rest."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

import search.objective as objective
from search.config import QuantConfig
from search.measure import TimingSettings, paired_speedup
from search.objective import Evaluator


@dataclass
class Measured:
    """Every paired measurement an evaluator makes, in order: its budget and the seconds it
    took, warm-up included."""

    budgets: list[float] = field(default_factory=list)
    spent: list[float] = field(default_factory=list)


@pytest.fixture
def measured(monkeypatch) -> Measured:
    seen = Measured()

    def recording(baseline, candidate, batches, settings, **kwargs):
        seen.budgets.append(settings.seconds)
        speed = paired_speedup(baseline, candidate, batches, settings, **kwargs)
        seen.spent.append(speed.warmup_seconds + speed.seconds)
        return speed

    monkeypatch.setattr(objective, "paired_speedup", recording)
    return seen


def test_the_options_gain_and_the_candidate_share_one_budget(tiny_task, measured):
    # target never met: every measurement runs its budget out, on a fast CPU as on a slow one
    timing = TimingSettings(seconds=0.6, warmup_runs=1, block_pairs=2, min_blocks=2, target=1e-9)
    evaluator = Evaluator(tiny_task, timing)
    try:
        options = QuantConfig(operators=("MatMul",), disabled_fusions=("SkipLayerNormFusion",))
        first = evaluator.evaluate(options)
        gain, candidate = measured.budgets
        assert gain == pytest.approx(0.2)  # a third, measured first
        # what the gain left: the budget less what the gain's measurement took (it stops when
        # one more block would pass its 0.2 s, so it took about that, never more than a block)
        assert 0 <= candidate <= 0.6 - measured.spent[0]
        assert first.attrs["fp32_options_speedup"] > 0

        measured.budgets.clear()  # the same options again: the gain is known, all is left
        evaluator.evaluate(options.replace(per_channel=True))
        assert len(measured.budgets) == 1 and measured.budgets[0] > 0.59

        measured.budgets.clear()  # default options: no gain to measure
        evaluator.evaluate(QuantConfig(operators=("MatMul",)))
        assert len(measured.budgets) == 1 and measured.budgets[0] > 0.59
    finally:
        evaluator.close()
