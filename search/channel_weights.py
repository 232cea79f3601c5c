"""Per-channel quantized weights, computed once per weight and kept for the next trial.

onnxruntime's dynamic and QOperator quantizers quantize a weight per channel in a Python
loop, one channel at a time (`BaseQuantizer.quantize_weight_per_channel_impl`): 83,714
channels on a BERT-base-size model, ~10 s of a trial on a Zen 3, ~1.6 s on MiniLM. A search
quantizes the same weights the same way in trial after trial (the beam's moves mostly change
other dimensions), so while `per_channel_weights_reused()` is active the function's result,
the initializers it adds, is kept per (weight bytes, quantized type, axis, symmetry, reduced
range, minimum range) in this process and replayed on the next request. A weight with
per-channel overrides is quantized by onnxruntime every time. The quantized bytes are the
same as onnxruntime's, checked by the tests.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections import OrderedDict
from collections.abc import Iterator

# What the kept weights may take in memory: a BERT-base-size model's int8 weights are 85 MB
# per variant (symmetry, reduced range, axis), so a search's few variants fit.
CACHE_BYTES = 512 * 1024 * 1024

_cache: OrderedDict[tuple, tuple[tuple[str, str, str], list]] = OrderedDict()
_sizes: dict[tuple, int] = {}
stats = {"computed": 0, "reused": 0}


def clear() -> None:
    _cache.clear()
    _sizes.clear()
    stats.update(computed=0, reused=0)


def _key(quantizer, weight_name, weight_qtype, channel_axis, reduce_range, keep_float_weight):
    """What the loop's result depends on, or None where it depends on more (overrides)."""
    from onnxruntime.quantization.quant_utils import find_by_name

    overrides = getattr(quantizer, "tensor_quant_overrides", None)
    if overrides is None or weight_name in overrides:
        return None
    initializer = find_by_name(weight_name, quantizer.model.initializer())
    if initializer is None:
        return None
    digest = hashlib.sha256(initializer.SerializeToString()).hexdigest()
    return (
        digest,
        int(weight_qtype),
        int(channel_axis),
        bool(quantizer.is_weight_symmetric(weight_qtype)),
        bool(quantizer.reduce_range and reduce_range),
        quantizer.min_real_range,
        bool(keep_float_weight),
    )


def _store(key: tuple, names: tuple[str, str, str], added: list) -> None:
    from onnx import TensorProto

    kept = []
    for tensor in added:
        copy = TensorProto()
        copy.CopyFrom(tensor)
        kept.append(copy)
    _cache[key] = (names, kept)
    _sizes[key] = sum(t.ByteSize() for t in kept)
    while sum(_sizes.values()) > CACHE_BYTES and len(_cache) > 1:
        old, _ = _cache.popitem(last=False)
        del _sizes[old]


@contextlib.contextmanager
def per_channel_weights_reused() -> Iterator[None]:
    """While active, onnxruntime's per-channel weight quantization replays what it computed
    before for the same weight and settings (in this process)."""
    try:
        from onnxruntime.quantization.base_quantizer import BaseQuantizer
    except ImportError:  # pragma: no cover - an onnxruntime without it quantizes as before
        yield
        return
    original = getattr(BaseQuantizer, "quantize_weight_per_channel_impl", None)
    if original is None:  # pragma: no cover
        yield
        return

    def reused(
        self, weight_name, weight_qType, channel_axis, reduce_range=True, keep_float_weight=False
    ):  # noqa: N803 - onnxruntime's signature
        args = (weight_name, weight_qType, channel_axis, reduce_range, keep_float_weight)
        key = _key(self, *args)
        if key is not None and key in _cache:
            names, kept = _cache[key]
            _cache.move_to_end(key)
            self.model.initializer_extend(list(kept))
            stats["reused"] += 1
            return names
        before = len(self.model.initializer())
        names = original(self, *args)
        if key is not None:
            _store(key, tuple(names), list(self.model.initializer())[before:])
            stats["computed"] += 1
        return names

    BaseQuantizer.quantize_weight_per_channel_impl = reused
    try:
        yield
    finally:
        BaseQuantizer.quantize_weight_per_channel_impl = original
