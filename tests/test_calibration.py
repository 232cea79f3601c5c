"""Calibration a shard of rows at a time: exactly the ranges Optimum's one-shot `fit` gives,
without holding every row's activations at once (see `search.calibrate.SHARD_ROWS`)."""

import importlib.util
from pathlib import Path

import pytest

import search.calibrate
from search.calibrate import compute_ranges
from search.config import QuantConfig

ROOT = Path(__file__).resolve().parent.parent


def _bench():
    path = ROOT / "benchmarks" / "calibration_memory.py"
    spec = importlib.util.spec_from_file_location("calibration_memory", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ends(ranges) -> dict[str, tuple[float, float]]:
    bench = _bench()
    return {name: bench._ends(value) for name, value in ranges.items()}


SHARD = 8  # rows per shard here: the tiny task's 22 calibration rows take two (16 of them
# used, a whole number of batches of 8)


@pytest.fixture
def collected(monkeypatch):
    """The rows each `collect_data` call of any calibrator was given, shards of `SHARD`."""
    from optimum.onnxruntime.configuration import CalibrationConfig

    monkeypatch.setattr(search.calibrate, "SHARD_ROWS", SHARD)

    calls: list[int] = []
    real = CalibrationConfig.create_calibrator

    def spy(self, *args, **kwargs):
        calibrator = real(self, *args, **kwargs)
        collect = calibrator.collect_data

        def counted(reader):
            calls.append(len(reader.dataset))
            return collect(reader)

        calibrator.collect_data = counted
        return calibrator

    monkeypatch.setattr(CalibrationConfig, "create_calibrator", spy)
    return calls


def test_minmax_ranges_by_shards_equal_the_one_shot_fit(tiny_task, collected):
    rows = len(tiny_task.calibration_dataset())
    config = QuantConfig(mode="static", format="QDQ", operators=("MatMul",), calibration="minmax")
    sharded = _ends(compute_ranges(tiny_task, config))
    assert collected == [SHARD] * (rows // SHARD) and len(collected) >= 2
    once = _ends(_bench().one_shot(tiny_task, config))
    assert sharded.keys() == once.keys() and len(once) > 10
    assert sharded == once  # min and max merge exactly


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_histogram_ranges_by_shards_equal_the_one_shot_fit(tiny_task, collected, method):
    config = QuantConfig(
        mode="static",
        format="QDQ",
        operators=("MatMul",),
        calibration=method,
        percentile=99.999 if method == "percentile" else None,
    )
    sharded = _ends(compute_ranges(tiny_task, config))
    assert len(collected) == 2
    once = _ends(_bench().one_shot(tiny_task, config))
    assert sharded.keys() == once.keys() and len(once) > 10
    assert sharded == once  # the bins fixed first: the shards' counts add up to one histogram
