"""Fused attention on the tiny BERT, quantized for real: the fused model is built once and
cached, a fused config quantizes to QAttention and runs, its graph differs from the unfused
one, node groups resolve against the fused graph, the trial records the fusion while fp32
stays the export, and bad inputs are refused with one clear message."""

from __future__ import annotations

import collections
import hashlib

import numpy as np
import onnx
import optuna
import pytest
from onnx import TensorProto, helper

from search import fusion
from search.config import QuantConfig
from search.errors import ConfigError, SpaceError
from search.measure import make_session
from search.quantize import quantize
from search.space import SearchSpace, load_space
from search.space_walk import all_configs, neighbours
from search.structure import model_structure

FUSED = QuantConfig(operators=("Attention", "MatMul"), attention_fusion=True)


def ops(path) -> collections.Counter:
    return collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def logits(task, path) -> np.ndarray:
    return np.asarray(task.outputs(make_session(path)))


def test_the_fused_model_has_one_attention_node_per_layer_and_is_computed_once(
    tiny_task, monkeypatch
):
    path = fusion.fused_model(tiny_task.model_path)
    assert ops(path)["Attention"] == 2 and ops(path)["Softmax"] == 0
    assert ops(tiny_task.model_path)["Attention"] == 0  # the export is left as it was
    # Only attention is fused: LayerNormalization and the embedding Gathers stay.
    assert ops(path)["SkipLayerNormalization"] == 0 and ops(path)["EmbedLayerNormalization"] == 0
    monkeypatch.setattr(fusion, "fuse_attention", lambda _: pytest.fail("recomputed"))
    assert fusion.fused_model(tiny_task.model_path) == path  # read back from the cache
    # fp32 through the fused graph computes what the export computes.
    np.testing.assert_allclose(
        logits(tiny_task, path), logits(tiny_task, tiny_task.model_path), atol=1e-4
    )


def test_a_fused_config_quantizes_to_qattention_and_differs_from_the_unfused(tiny_task, tmp_path):
    fused = quantize(FUSED, tiny_task.model_path, tmp_path / "fused")
    plain = quantize(FUSED.replace(attention_fusion=False), tiny_task.model_path, tmp_path / "p")
    assert fused.name == plain.name == f"{tiny_task.model_path.stem}_quantized.onnx"
    assert ops(fused)["QAttention"] == 2 and ops(fused)["Softmax"] == 0
    assert ops(plain)["QAttention"] == 0 and ops(plain)["Softmax"] == 2
    assert sha(fused) != sha(plain)
    out = logits(tiny_task, fused)
    assert out.shape == logits(tiny_task, plain).shape and np.isfinite(out).all()
    # Without "Attention" among the operators the fused block stays an fp32 Attention node.
    fp32_block = quantize(
        FUSED.replace(operators=["MatMul"]), tiny_task.model_path, tmp_path / "fp32-block"
    )
    assert ops(fp32_block)["Attention"] == 2 and ops(fp32_block)["MatMulInteger"] > 0


def test_groups_resolve_against_the_fused_graph(tiny_task, tmp_path):
    structure = model_structure(fusion.fused_model(tiny_task.model_path))
    assert structure.layers == 2 and structure.activation_matmuls == ()
    assert not any(g.endswith(".scores") for g in structure.groups)
    unfused = model_structure(tiny_task.model_path)
    for role in ("attn_out", "ffn_up", "ffn_down"):  # the same MatMuls as before fusion
        assert structure.groups[f"layer1.{role}"] == unfused.groups[f"layer1.{role}"]
    assert structure.groups["head"] == unfused.groups["head"]
    # `qkv` is the layer's Attention node: kept fp32, that layer gets no QAttention.
    kept = quantize(FUSED.replace(fp32_groups=["layer1.qkv"]), tiny_task.model_path, tmp_path / "k")
    assert ops(kept)["QAttention"] == 1 and ops(kept)["Attention"] == 1
    with pytest.raises(ConfigError, match="must not name attention scores"):
        FUSED.replace(fp32_groups=["layer1.scores"])
    with pytest.raises(ConfigError, match="must not name attention scores"):
        FUSED.replace(fp32_groups=["scores"])


def test_the_trial_records_the_fusion_and_fp32_stays_the_export(tiny_task):
    from search.measure import TimingSettings
    from search.objective import Evaluator

    before = sha(tiny_task.model_path)
    evaluator = Evaluator(tiny_task, TimingSettings(seconds=0.3, warmup_runs=1, block_pairs=2))
    try:
        fused = evaluator.evaluate(FUSED)
        plain = evaluator.evaluate(FUSED.replace(attention_fusion=False))
    finally:
        evaluator.close()
    assert fused.attrs["config"]["attention_fusion"] is True
    assert "fused attention (QAttention)" in fused.attrs["description"]
    assert "attention_fusion" not in plain.attrs["config"]
    assert fused.attrs["graph_sha256"] != plain.attrs["graph_sha256"]
    assert sha(tiny_task.model_path) == before


def test_configs_refuse_what_fusion_cannot_mean():
    with pytest.raises(ConfigError, match="`attention_fusion` must be true or false"):
        QuantConfig(attention_fusion="yes")
    with pytest.raises(ConfigError, match="`attention_fusion` must be false in static mode"):
        QuantConfig(mode="static", attention_fusion=True)
    # Stable keys: the default is left out of the dict, so configs recorded before keep theirs.
    assert "attention_fusion" not in QuantConfig().to_dict()
    assert QuantConfig().key == QuantConfig.from_dict(QuantConfig().to_dict()).key
    assert FUSED.to_dict()["attention_fusion"] is True and FUSED.key != QuantConfig().key
    assert QuantConfig.from_dict(FUSED.to_dict()) == FUSED


def test_a_model_without_attention_to_fuse_is_refused(tmp_path):
    weight = helper.make_tensor("w", TensorProto.FLOAT, [4, 4], np.ones(16, np.float32))
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        "no_attention",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [weight],
    )
    path = tmp_path / "plain.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(ConfigError, match="fused none"):
        fusion.fused_model(path, directory=tmp_path / "fused")


SPACE = """
[quantization]
mode = ["dynamic"]
operators = "auto"
attention_fusion = [false, true]
[fallback]
groups = ["scores", "head"]
"""


def test_a_space_searches_fusion_and_offers_attention_only_with_it(tiny_task):
    structure = model_structure(tiny_task.model_path)
    space = SearchSpace.from_text(SPACE).resolve(tiny_task.operators, structure=structure)
    assert "Attention" in space.operators and space.fused_operators == ("Attention",)
    configs = list(all_configs(space))
    assert not any("Attention" in c.operators and not c.attention_fusion for c in configs)
    assert any("Attention" in c.operators and c.attention_fusion for c in configs)
    assert not any(c.attention_fusion and "scores" in c.fp32_groups for c in configs)
    study = optuna.create_study(directions=["maximize", "maximize"])
    for config in configs:
        study.enqueue_trial(space.params(config))
        assert space.suggest(study.ask()).key == config.key
    start = space.default_config(["MatMul"]).replace(fp32_groups=["scores"])
    steps = list(neighbours(space, start))
    assert not any("Attention" in c.operators for c in steps if not c.attention_fusion)
    fused = [c for c in steps if c.attention_fusion]
    assert {("Attention" in c.operators) for c in fused} == {False, True}
    assert all(c.fp32_groups == () for c in fused)  # the scores group has no node when fused
    back = [c for c in neighbours(space, FUSED) if not c.attention_fusion]
    assert back and all("Attention" not in c.operators for c in back)


def test_spaces_without_the_dimension_keep_their_digest_and_bad_values_are_refused():
    plain = SearchSpace.from_text('[quantization]\nmode = ["dynamic"]\n')
    explicit = SearchSpace.from_text(
        '[quantization]\nmode = ["dynamic"]\nattention_fusion = [false]\n'
    )
    assert plain.digest == explicit.digest
    with pytest.raises(SpaceError, match="attention_fusion` must hold bool values, but got 'yes'"):
        SearchSpace.from_text('[quantization]\nattention_fusion = ["yes"]\n')
    with pytest.raises(SpaceError, match="attention_fusion` must hold bool values, but got 1"):
        SearchSpace.from_text("[quantization]\nattention_fusion = 1\n")
    with pytest.raises(SpaceError, match="applies to dynamic quantization only"):
        SearchSpace.from_text('[quantization]\nmode = ["static"]\nattention_fusion = [true]\n')


def test_the_scopes_benchmark_times_the_fused_rows_beside_the_unfused(tiny_task):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "node_scopes.py"
    spec = importlib.util.spec_from_file_location("node_scopes", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert len(bench.candidates()) == 7  # `make bench-scopes` without fusion: as before
    only = ["weight MatMuls, per-channel"]
    result = bench.run_benchmark(
        tiny_task, rounds=1, seconds=0.2, progress=lambda _: None, fusion=True, only=only
    )
    rows = {r["config"]: r for r in result["rows"]}
    assert len(rows) == 3 and sum("fused" in name for name in rows) == 2
    assert all(len(r["rounds"]) == 1 and r["speedup"] > 0 for r in rows.values())
    with pytest.raises(SystemExit, match="--only must start a row's name"):
        bench.select(bench.candidates(True), ["no such row"])


def test_the_beam_starts_from_the_unfused_default_of_a_fusion_space(tiny_task):
    from search.strategies.beam import BeamSearch

    space = load_space("attention").resolve(tiny_task.operators)
    start = space.default_config(space.operators)
    assert not start.attention_fusion and "Attention" not in start.operators
    initial = BeamSearch(width=2).initial(space)
    assert initial and not any("Attention" in c.operators for c in initial)
    assert any(c.attention_fusion for c in neighbours(space, initial[0]))
