"""Node-level configs on the tiny BERT, quantized for real: the `weights` MatMul scope, fp32
groups resolved to exactly their nodes, the export reproducing the trial's graph, and the
space's group dimensions."""

from __future__ import annotations

import collections
import hashlib

import onnx
import optuna
import pytest

from search.calibrate import compute_ranges
from search.config import QuantConfig
from search.errors import ConfigError, SpaceError
from search.quantize import quantize
from search.space import SearchSpace
from search.space_walk import all_configs, neighbours
from search.structure import model_structure


def ops(path) -> collections.Counter:
    return collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def fp32_matmuls(path) -> set[str]:
    return {n.name for n in onnx.load(str(path)).graph.node if n.op_type in ("MatMul", "Gemm")}


def test_weights_scope_leaves_the_attention_products_in_fp32(tiny_task, tmp_path):
    structure = model_structure(tiny_task.model_path)
    every = quantize(QuantConfig(operators=("MatMul",)), tiny_task.model_path, tmp_path / "a")
    weights = QuantConfig(operators=("MatMul",), matmul_scope="weights")
    only = quantize(weights, tiny_task.model_path, tmp_path / "w")
    products = len(structure.activation_matmuls)
    assert products == 4  # scores and context of each of the 2 layers
    assert ops(only)["MatMulInteger"] == ops(every)["MatMulInteger"] - products
    assert fp32_matmuls(only) - fp32_matmuls(every) == set(structure.activation_matmuls)
    # Q, K and V of a layer read one input: one DynamicQuantizeLinear serves all three
    qkv_inputs = 2  # one per layer
    assert ops(every)["DynamicQuantizeLinear"] - ops(only)["DynamicQuantizeLinear"] == (
        products + 2 * qkv_inputs
    )


@pytest.mark.parametrize("group", ["last_layer.ffn_down", "qkv", "head", "layer0"])
def test_an_fp32_group_leaves_exactly_its_nodes_in_fp32(tiny_task, tmp_path, group):
    structure = model_structure(tiny_task.model_path)
    base = QuantConfig(mode="static", format="QDQ", operators=("Gemm", "MatMul"))
    kept = base.replace(fp32_groups=[group])
    ranges = compute_ranges(tiny_task, base)
    a = quantize(base, tiny_task.model_path, tmp_path / "base", ranges)
    b = quantize(kept, tiny_task.model_path, tmp_path / "kept", ranges)

    def quantized_matmuls(path) -> set[str]:
        model = onnx.load(str(path))
        dequantized = {
            o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output
        }
        return {
            n.name
            for n in model.graph.node
            if n.op_type in ("MatMul", "Gemm") and any(i in dequantized for i in n.input)
        }

    newly_fp32 = quantized_matmuls(a) - quantized_matmuls(b)
    expected = set(structure.resolve([group])) & quantized_matmuls(a)
    assert newly_fp32 == expected and expected
    assert quantized_matmuls(b) == quantized_matmuls(a) - expected
    assert "fp32: " + group in kept.describe()


def test_a_group_the_model_lacks_is_refused(tiny_task, tmp_path):
    config = QuantConfig(operators=("MatMul",), fp32_groups=("layer7",))
    with pytest.raises(ConfigError, match="layer7.*2 layers"):
        quantize(config, tiny_task.model_path, tmp_path / "q")
    with pytest.raises(ConfigError, match="fp32_groups"):
        QuantConfig(fp32_groups=("layer1.mlp",))
    space = SearchSpace.from_text('[fallback]\ngroups = ["head", "layer7"]\n')
    with pytest.raises(SpaceError, match="layer7"):
        space.resolve(tiny_task.operators, structure=model_structure(tiny_task.model_path))


def test_configs_recorded_before_node_scopes_keep_their_keys():
    config = QuantConfig(operators=("MatMul",))
    assert "matmul_scope" not in config.to_dict() and "fp32_groups" not in config.to_dict()
    assert config.key == QuantConfig.from_dict(config.to_dict()).key
    assert config.replace(matmul_scope="weights").key != config.key
    # a config that quantizes no MatMul has no scope to choose
    gather = QuantConfig(operators=("Gather",))
    assert gather.replace(matmul_scope="weights").key == gather.key
    old = SearchSpace.from_text('[quantization]\nmode = ["dynamic"]\n')
    scoped = SearchSpace.from_text('[quantization]\nmode = ["dynamic"]\nmatmul_scope = ["all"]\n')
    assert old.digest == scoped.digest


def test_the_export_of_a_config_with_groups_reproduces_the_trial_s_graph(tiny_task, tmp_path):
    from search.export import export_trial
    from search.measure import TimingSettings
    from search.objective import Evaluator

    config = QuantConfig(
        operators=("Gather", "MatMul"), matmul_scope="weights", fp32_groups=("head", "layer1.qkv")
    )
    evaluator = Evaluator(tiny_task, TimingSettings(seconds=0.3, warmup_runs=1, block_pairs=2))
    try:
        result = evaluator.evaluate(config)
    finally:
        evaluator.close()
    study = optuna.create_study(directions=["maximize", "maximize"])
    study.add_trial(
        optuna.trial.create_trial(values=[result.accuracy, result.speedup], user_attrs=result.attrs)
    )
    out = tmp_path / "export"
    export_trial(study, study.trials[0], tiny_task, out)
    exported = hashlib.sha256((out / "model.onnx").read_bytes()).hexdigest()
    assert exported == result.attrs["graph_sha256"]
    from optimum.onnxruntime import ORTConfig, ORTModelForSequenceClassification

    saved = ORTConfig.from_pretrained(out).quantization
    assert set(saved.nodes_to_exclude) == set(
        config.nodes_to_exclude(model_structure(tiny_task.model_path))
    )
    ORTModelForSequenceClassification.from_pretrained(out)  # Optimum loads it


def test_group_dimensions_are_suggested_enumerated_and_flipped_by_the_beam(tiny_task):
    text = """
[quantization]
mode = ["dynamic"]
operators = ["MatMul"]
matmul_scope = ["weights", "all"]
[fallback]
groups = ["head", "last_layer"]
"""
    space = SearchSpace.from_text(text).resolve(
        tiny_task.operators, structure=model_structure(tiny_task.model_path)
    )
    start = space.default_config(["MatMul"])
    assert start.matmul_scope == "weights" and start.fp32_groups == ()
    steps = {c.key: c for c in neighbours(space, start)}
    assert {c.fp32_groups for c in steps.values()} >= {("head",), ("last_layer",)}
    assert any(c.matmul_scope == "all" for c in steps.values())
    configs = list(all_configs(space))
    assert len(configs) == 2 * 4  # scope x subsets of two groups
    study = optuna.create_study(directions=["maximize", "maximize"])
    for config in configs:
        study.enqueue_trial(space.params(config))
        assert space.suggest(study.ask()).key == config.key
