"""The quantizer's shape-inferred copy, made once per model (`search.inferred`): quantizing
from it writes the bytes onnxruntime's own inference gives, and it is made once."""

import contextlib

import onnx
import pytest

import search.quantize as quantize_module
from search.calibrate import compute_ranges
from search.config import QuantConfig
from search.inferred import has_gemm, inferred_model
from search.quantize import quantize

CONFIGS = {
    "dynamic": QuantConfig(operators=("MatMul",)),
    "dynamic per-channel, Gemm too": QuantConfig(operators=("Gemm", "MatMul"), per_channel=True),
    "dynamic weight MatMuls": QuantConfig(operators=("MatMul",), matmul_scope="weights"),
    "static QDQ": QuantConfig(mode="static", format="QDQ", operators=("Gemm", "MatMul")),
    "static QOperator": QuantConfig(mode="static", format="QOperator", operators=("MatMul",)),
}


@contextlib.contextmanager
def onnxruntime_inferring_itself(monkeypatch):
    """quantize() as it was: the quantizer given the model itself, shapes inferred in it."""
    with monkeypatch.context() as m:
        m.setattr(quantize_module, "inferred_model", lambda model, dynamic: model)
        m.setattr(quantize_module, "second_inference_skipped", lambda m: contextlib.nullcontext())
        yield


@pytest.mark.parametrize("name", list(CONFIGS))
def test_quantizing_from_the_inferred_copy_writes_the_same_bytes(
    tiny_task, tmp_path, monkeypatch, name
):
    config = CONFIGS[name]
    ranges = compute_ranges(tiny_task, config) if config.mode == "static" else None
    assert has_gemm(tiny_task.model_path)  # the classifier: the dynamic rewrite has work to do
    ours = quantize(config, tiny_task.model_path, tmp_path / "ours", ranges)
    with onnxruntime_inferring_itself(monkeypatch):
        theirs = quantize(config, tiny_task.model_path, tmp_path / "theirs", ranges)
    assert ours.read_bytes() == theirs.read_bytes()


def test_the_copy_is_made_once_per_model_and_pass(tiny_task, tmp_path, monkeypatch):
    import onnxruntime.quantization.quant_utils as quant_utils

    calls = []
    real = quant_utils.save_and_reload_model_with_shape_infer
    monkeypatch.setattr(
        quant_utils,
        "save_and_reload_model_with_shape_infer",
        lambda model: calls.append(1) or real(model),
    )
    static = inferred_model(tiny_task.model_path, dynamic=False, home=tmp_path)
    assert len(calls) == 1
    dynamic = inferred_model(tiny_task.model_path, dynamic=True, home=tmp_path)
    assert len(calls) == 3  # inferred, Gemms rewritten, inferred again
    assert inferred_model(tiny_task.model_path, dynamic=True, home=tmp_path) == dynamic
    assert inferred_model(tiny_task.model_path, dynamic=False, home=tmp_path) == static
    assert len(calls) == 3
    for path, gemms in ((static, True), (dynamic, False)):
        model = onnx.load(str(path))
        marks = {p.key: p.value for p in model.metadata_props}
        assert marks.get("onnx.infer") == "onnxruntime.quant"  # the quantizer skips its pass
        assert any(n.op_type == "Gemm" for n in model.graph.node) == gemms
        assert len(model.graph.value_info) > 0
    assert not [p for p in (tmp_path / "inferred").iterdir() if p.name.startswith(".")]


def test_a_trial_quantizes_without_inferring_shapes_again(tiny_task, tmp_path, monkeypatch):
    """Once the copy exists, neither of the quantizer's passes runs in a trial."""
    from onnxruntime.quantization import onnx_quantizer

    config = CONFIGS["dynamic per-channel, Gemm too"]
    quantize(config, tiny_task.model_path, tmp_path / "first")
    calls, counting = [], {}
    for module in ("base_quantizer", "onnx_quantizer"):
        mod = __import__(f"onnxruntime.quantization.{module}", fromlist=["x"])
        real = mod.save_and_reload_model_with_shape_infer
        counting[module] = lambda model, real=real, module=module: (
            calls.append(module) or real(model)
        )
        monkeypatch.setattr(mod, "save_and_reload_model_with_shape_infer", counting[module])
    quantize(config, tiny_task.model_path, tmp_path / "second")
    assert calls == []
    # and the quantizer's own function is back in place afterwards
    assert onnx_quantizer.save_and_reload_model_with_shape_infer is counting["onnx_quantizer"]


@pytest.mark.parametrize("copy_external", [False, True], ids=["copy inline", "copy external"])
def test_a_model_with_external_data_quantizes_to_the_same_bytes(
    tiny_task, tmp_path, monkeypatch, copy_external
):
    """A model over 2 GB keeps its weights in a file beside it (`model.onnx_data`); the
    quantizer reads it through a link, so its data must be linked too. Built small here,
    with every weight external, and the inferred copy forced external as well."""
    import search.inferred as inferred

    monkeypatch.setenv("QSEARCH_HOME", str(tmp_path / "home"))
    if copy_external:
        monkeypatch.setattr(inferred, "EXTERNAL_DATA_BYTES", 0)
    folder = tmp_path / "external"
    folder.mkdir()
    onnx.save_model(
        onnx.load(str(tiny_task.model_path)),
        str(folder / "model.onnx"),
        save_as_external_data=True,
        location="model.onnx_data",
        size_threshold=0,
    )
    assert [p.name for p in inferred.external_files(folder / "model.onnx")] == ["model.onnx_data"]
    for name in ("dynamic per-channel, Gemm too", "static QDQ"):
        config = CONFIGS[name]
        ranges = compute_ranges(tiny_task, config) if config.mode == "static" else None
        ours = quantize(config, folder / "model.onnx", tmp_path / f"ext-{config.key}", ranges)
        inline = quantize(config, tiny_task.model_path, tmp_path / f"in-{config.key}", ranges)
        # the same model, but for the weights read back from the file saying where they came
        # from (`data_location: DEFAULT`, explicitly)
        assert _without_locations(ours) == _without_locations(inline)
        copies = list((tmp_path / "home" / "inferred").rglob("*.data"))
        assert bool(copies) == copy_external


def _without_locations(path) -> bytes:
    model = onnx.load(str(path))
    for tensor in model.graph.initializer:
        tensor.ClearField("data_location")
    return model.SerializeToString()


def test_the_model_digest_covers_weights_kept_beside_the_model(tiny_task, tmp_path):
    """Two external-data models with the same graph and other weights: their `.onnx` files
    are the same bytes, their digests (calibration, sensitivity, the study) are not."""
    import numpy as np
    from onnx import numpy_helper

    from search.model_files import file_digest, model_digest

    assert model_digest(tiny_task.model_path) == file_digest(tiny_task.model_path)
    paths = []
    for i in range(2):
        model = onnx.load(str(tiny_task.model_path))
        weight = model.graph.initializer[0]
        weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) + i, weight.name))
        folder = tmp_path / f"m{i}"
        folder.mkdir()
        onnx.save_model(
            model,
            str(folder / "model.onnx"),
            save_as_external_data=True,
            location="model.onnx_data",
            size_threshold=0,
        )
        paths.append(folder / "model.onnx")
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert model_digest(paths[0]) != model_digest(paths[1])
    assert np.all(np.array([len(model_digest(p)) for p in paths]) == 16)
