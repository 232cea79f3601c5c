"""Per-channel weights quantized once and replayed (`search.channel_weights`): the same
bytes as onnxruntime's own loop, reused only for the same weight and settings."""

import contextlib

import pytest

import search.channel_weights as channel_weights
import search.quantize as quantize_module
from search.calibrate import compute_ranges
from search.config import QuantConfig
from search.quantize import quantize

PER_CHANNEL = QuantConfig(operators=("Gemm", "MatMul"), per_channel=True)


@pytest.fixture(autouse=True)
def empty_cache():
    channel_weights.clear()
    yield
    channel_weights.clear()


def _quantize_without_reuse(monkeypatch, *args):
    with monkeypatch.context() as m:
        m.setattr(quantize_module, "per_channel_weights_reused", contextlib.nullcontext)
        return quantize(*args)


@pytest.mark.parametrize(
    "config",
    [
        PER_CHANNEL,
        PER_CHANNEL.replace(weights_dtype="uint8", operators=("MatMul",)),
        PER_CHANNEL.replace(reduce_range=True),
        QuantConfig(mode="static", format="QOperator", operators=("MatMul",), per_channel=True),
    ],
    ids=["s8", "u8 asymmetric", "reduce-range", "static QOperator"],
)
def test_reused_weights_give_onnxruntimes_bytes(tiny_task, tmp_path, monkeypatch, config):
    ranges = compute_ranges(tiny_task, config) if config.mode == "static" else None
    first = quantize(config, tiny_task.model_path, tmp_path / "first", ranges)
    computed = channel_weights.stats["computed"]
    assert computed > 0 and channel_weights.stats["reused"] == 0
    second = quantize(config, tiny_task.model_path, tmp_path / "second", ranges)
    assert channel_weights.stats == {"computed": computed, "reused": computed}
    theirs = _quantize_without_reuse(
        monkeypatch, config, tiny_task.model_path, tmp_path / "theirs", ranges
    )
    assert first.read_bytes() == second.read_bytes() == theirs.read_bytes()


def test_other_settings_are_quantized_afresh(tiny_task, tmp_path):
    quantize(PER_CHANNEL, tiny_task.model_path, tmp_path / "a")
    computed = channel_weights.stats["computed"]
    # the same weights, another range: nothing to reuse
    quantize(PER_CHANNEL.replace(reduce_range=True), tiny_task.model_path, tmp_path / "b")
    assert channel_weights.stats == {"computed": 2 * computed, "reused": 0}
    # another dimension that leaves the weights alone: all reused
    fusion_off = PER_CHANNEL.replace(disabled_fusions=("SkipLayerNormFusion",))
    quantize(fusion_off, tiny_task.model_path, tmp_path / "c")
    assert channel_weights.stats["reused"] == computed


def test_the_cache_keeps_to_its_size(tiny_task, tmp_path, monkeypatch):
    monkeypatch.setattr(channel_weights, "CACHE_BYTES", 1)  # one weight at a time
    quantize(PER_CHANNEL, tiny_task.model_path, tmp_path / "a")
    assert len(channel_weights._cache) == 1
    quantize(PER_CHANNEL, tiny_task.model_path, tmp_path / "b")
    assert channel_weights.stats["reused"] <= 1
