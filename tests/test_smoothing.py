"""SmoothQuant as a dimension of static quantization: the rewrite keeps the fp32 function,
flattens an outlier channel so that static int8 loses less, and a smoothed config runs as a
trial, exports to the same graph and is searched like any other dimension."""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
import onnxruntime
import optuna
import pytest
from onnx import TensorProto, helper, numpy_helper

from search.calibrate import CalibrationCache
from search.config import QuantConfig
from search.errors import ConfigError, SpaceError
from search.smoothing import SMOOTH_PREFIX, smooth, smoothing_nodes, weight_matmul_groups
from search.space import SearchSpace
from search.space_walk import neighbours
from search.structure import model_structure


def outlier_model(path, seed=0):
    """y = x W, plus a MatMul of x by itself (activation x activation: not smoothed), and
    calibration data whose channel 3 is ~100x the others, as a BERT activation's outlier
    channels are."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(16, 16)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["y"], name="mm"),
        helper.make_node("Transpose", ["x"], ["xt"], name="t", perm=[1, 0]),
        helper.make_node("MatMul", ["xt", "x"], ["gram"], name="gram"),
    ]
    graph = helper.make_graph(
        nodes,
        "outlier",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 16])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 16]),
            helper.make_tensor_value_info("gram", TensorProto.FLOAT, [16, 16]),
        ],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    x = rng.normal(size=(256, 16)).astype(np.float32)
    x[:, 3] *= 100.0
    return path, [{"x": x[i : i + 32]} for i in range(0, 256, 32)]


def run(path, feed):
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["y"], feed)[0]


def test_the_rewrite_keeps_the_fp32_function_and_moves_the_outlier_into_the_weights(tmp_path):
    path, feeds = outlier_model(tmp_path / "m.onnx")
    groups = weight_matmul_groups(onnx.load(str(path)))
    assert {k: [n.name for n in v] for k, v in groups.items()} == {"x": ["mm"]}
    smoothed = smooth(path, feeds, 0.5)
    onnx.checker.check_model(smoothed)
    out = tmp_path / "s.onnx"
    onnx.save(smoothed, str(out))
    for feed in feeds[:2]:
        np.testing.assert_allclose(run(out, feed), run(path, feed), rtol=1e-4, atol=1e-3)
    muls = [n for n in smoothed.graph.node if n.name.startswith(SMOOTH_PREFIX)]
    assert len(muls) == 1 and smoothing_nodes(out) == [muls[0].name]
    gram = next(n for n in smoothed.graph.node if n.name == "gram")
    assert list(gram.input) == ["xt", "x"]  # the activation product reads x unsmoothed
    # what mm1 now reads: channel 3 is no longer ~100x the rest
    inputs = {i.name: numpy_helper.to_array(i) for i in smoothed.graph.initializer}
    inverse = inputs[muls[0].input[1]]
    flat = np.abs(np.concatenate([f["x"] for f in feeds]) * inverse).max(axis=0)
    raw = np.abs(np.concatenate([f["x"] for f in feeds])).max(axis=0)
    assert raw.max() / np.median(raw) > 50 and flat.max() / np.median(flat) < 15


def test_smoothing_makes_static_int8_of_an_outlier_model_more_accurate(tmp_path):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    path, feeds = outlier_model(tmp_path / "m.onnx")
    smoothed = tmp_path / "s.onnx"
    onnx.save(smooth(path, feeds, 0.5), str(smoothed))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.rows = iter(feeds)

        def get_next(self):
            return next(self.rows, None)

    errors = {}
    for name, source in (("plain", path), ("smoothed", smoothed)):
        out = tmp_path / f"{name}-int8.onnx"
        quantize_static(
            str(source),
            str(out),
            Reader(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["MatMul"],
            # gram kept fp32: quantizing it would quantize x itself, before the Mul
            nodes_to_exclude=[*smoothing_nodes(source), "gram"],
        )
        errors[name] = np.mean([np.abs(run(out, f) - run(path, f)).mean() for f in feeds])
    assert errors["smoothed"] < 0.7 * errors["plain"], errors  # 1.23 against 2.48 here


def test_a_smoothed_config_runs_as_a_trial_and_exports_the_same_graph(tiny_task, tmp_path):
    from optimum.onnxruntime import ORTConfig, ORTModelForSequenceClassification

    from search.export import export_trial
    from search.measure import TimingSettings
    from search.objective import Evaluator

    config = QuantConfig(mode="static", format="QDQ", operators=("MatMul",), smooth_quant=0.5)
    assert "SmoothQuant alpha 0.5" in config.describe()
    evaluator = Evaluator(tiny_task, TimingSettings(seconds=0.3, warmup_runs=1, block_pairs=2))
    try:
        result = evaluator.evaluate(config)
        plain = evaluator.evaluate(config.replace(smooth_quant=0.0))
    finally:
        evaluator.close()
    assert result.attrs["graph_sha256"] != plain.attrs["graph_sha256"]
    assert result.attrs["description"] == config.describe()
    study = optuna.create_study(directions=["maximize", "maximize"])
    study.add_trial(
        optuna.trial.create_trial(values=[result.accuracy, result.speedup], user_attrs=result.attrs)
    )
    out = tmp_path / "export"
    export_trial(study, study.trials[0], tiny_task, out)
    assert (
        hashlib.sha256((out / "model.onnx").read_bytes()).hexdigest()
        == (result.attrs["graph_sha256"])
    )
    exported = onnx.load(str(out / "model.onnx"))
    muls = [
        n for n in exported.graph.node if n.name.startswith(SMOOTH_PREFIX) and n.op_type == "Mul"
    ]
    structure = model_structure(tiny_task.model_path)
    # one Mul per weight MatMul input: Q/K/V share a layer's, then attn_out, ffn_up, ffn_down
    layers = structure.layers
    assert len(muls) == 4 * layers
    saved = ORTConfig.from_pretrained(out).quantization
    assert {m.name for m in muls} <= set(saved.nodes_to_exclude)  # kept fp32, as in the trial
    ORTModelForSequenceClassification.from_pretrained(out)  # Optimum loads it


def test_ranges_of_a_smoothed_config_are_its_own(tiny_task):
    cache = CalibrationCache(tiny_task, directory=None)
    base = QuantConfig(mode="static", operators=("MatMul",))
    assert cache.key(base) != cache.key(base.replace(smooth_quant=0.5))
    assert cache.smoothed(base) is None
    first = cache.smoothed(base.replace(smooth_quant=0.5))
    assert first.exists() and cache.smoothed(base.replace(smooth_quant=0.5)) == first
    assert cache.smoothed(base.replace(smooth_quant=0.8)) != first
    ranges = cache.ranges(base.replace(smooth_quant=0.5))
    assert any(name.startswith(SMOOTH_PREFIX) for name in ranges)  # the smoothed graph's tensors


def test_smooth_quant_is_static_and_matmul_only_and_refuses_bad_alphas():
    assert QuantConfig(smooth_quant=0.5).smooth_quant == 0.0  # dynamic: nothing to smooth
    assert QuantConfig(mode="static", operators=("Gather",), smooth_quant=0.5).smooth_quant == 0
    key = QuantConfig(mode="static").key
    assert QuantConfig(mode="static", smooth_quant=0).key == key  # studies before it resume
    for bad in (1.5, -0.1, True, "0.5"):
        with pytest.raises(ConfigError, match="smooth_quant"):
            QuantConfig(mode="static", smooth_quant=bad)


def test_the_space_searches_it_as_a_static_dimension(tmp_path):
    text = """
name = "sq"
[quantization]
mode = ["static", "dynamic"]
operators = ["MatMul"]
[calibration]
smooth_quant = [0.0, 0.5]
"""
    space = SearchSpace.from_text(text, "sq.toml").resolve(["MatMul"])
    base = QuantConfig(mode="static", operators=("MatMul",))
    assert base.replace(smooth_quant=0.5).key in {c.key for c in neighbours(space, base)}
    assert space.contains(base.replace(smooth_quant=0.5))
    study = optuna.create_study(directions=["maximize", "maximize"])
    for config in (base, base.replace(smooth_quant=0.5), QuantConfig()):
        study.enqueue_trial(space.params(config))
        assert space.suggest(study.ask()).key == config.key  # dynamic: no smooth_quant asked
    bad = text.replace("[0.0, 0.5]", "[0.0, 2.0]")
    with pytest.raises(SpaceError, match="calibration.smooth_quant"):
        SearchSpace.from_text(bad, "sq.toml")
