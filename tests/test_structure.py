"""The encoder's parts found from its graph: the tiny BERT's 2 layers, each role, the head
and the embeddings, the same whatever the exporter named its nodes."""

from __future__ import annotations

import onnx
import pytest

from search.structure import find_structure, is_selector, model_structure


@pytest.fixture(scope="module")
def model(tiny_task):
    return onnx.load(str(tiny_task.model_path))


def test_the_tiny_bert_s_parts_are_found_with_their_roles(tiny_task):
    structure = model_structure(tiny_task.model_path)
    assert structure.layers == 2
    for layer in (0, 1):
        g = structure.groups
        assert [n.rsplit("/", 2)[-2] for n in g[f"layer{layer}.qkv"]] == ["query", "key", "value"]
        assert all(
            f"layer.{layer}/" in n
            for group in g
            if group.startswith(f"layer{layer}.")
            for n in g[group]
        )
        assert g[f"layer{layer}.attn_out"] == (
            f"/bert/encoder/layer.{layer}/attention/output/dense/MatMul",
        )
        assert g[f"layer{layer}.ffn_up"] == (
            f"/bert/encoder/layer.{layer}/intermediate/dense/MatMul",
        )
        assert g[f"layer{layer}.ffn_down"] == (f"/bert/encoder/layer.{layer}/output/dense/MatMul",)
        assert len(g[f"layer{layer}.scores"]) == 2  # scores and context: activation x activation
    assert structure.groups["head"] == ("/bert/pooler/dense/Gemm", "/classifier/Gemm")
    assert len(structure.groups["embeddings"]) == 3
    assert set(structure.activation_matmuls) == set(
        structure.groups["layer0.scores"] + structure.groups["layer1.scores"]
    )
    assert len(structure.weight_matmuls) == 2 * 6 + 2


def test_parts_are_found_by_position_not_by_node_names(model):
    renamed = onnx.ModelProto()
    renamed.CopyFrom(model)
    names = {}
    for k, node in enumerate(renamed.graph.node):
        names[node.name] = node.name = f"{node.op_type}_{k}"
    original, other = find_structure(model), find_structure(renamed)
    assert other.layers == original.layers
    assert {g: tuple(names[n] for n in nodes) for g, nodes in original.groups.items()} == dict(
        other.groups
    )


def test_selectors_resolve_to_exactly_their_nodes(tiny_task):
    s = model_structure(tiny_task.model_path)
    assert s.resolve(["last_layer.ffn_down"]) == s.groups["layer1.ffn_down"]
    assert set(s.resolve(["ffn_down"])) == set(
        s.groups["layer0.ffn_down"] + s.groups["layer1.ffn_down"]
    )
    layer0 = {n for g, nodes in s.groups.items() if g.startswith("layer0.") for n in nodes}
    assert set(s.resolve(["first_layer"])) == layer0 == set(s.resolve(["layer0"]))
    assert set(s.resolve(["head", "embeddings"])) == set(s.groups["head"] + s.groups["embeddings"])
    with pytest.raises(ValueError, match="layer5.*2 layers"):
        s.resolve(["layer5"])


@pytest.mark.parametrize(
    "text, ok",
    [
        ("head", True),
        ("layer11.qkv", True),
        ("last_layer.ffn_up", True),
        ("scores", True),
        ("layer", False),
        ("layer1.mlp", False),
        ("Head", False),
        ("layer-1", False),
    ],
)
def test_selector_grammar(text, ok):
    assert is_selector(text) is ok
