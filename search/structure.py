"""The parts of a transformer encoder, found from its ONNX graph: which nodes form each layer
and what each does, so a config can say "keep FFN down of layer 5 in fp32" in words.

The configs that win are chosen per node (which MatMuls, which layers stay fp32), but node
names differ between exporters (`/bert/encoder/layer.0/...`, `MatMul_123`). So the parts are
found by position and data flow, not by names:

- a MatMul or Gemm whose second input is a constant is a *weight* MatMul; one that multiplies
  two activations is an attention score or context product (`scores`), and belongs to the
  layer of the Softmax it feeds or reads;
- weight MatMuls whose output reaches a layer's score/context products are its `qkv`
  projections; the weight MatMuls after the layer's context product, in graph order, are its
  `attn_out`, `ffn_up` and `ffn_down`;
- weight MatMuls past the last layer's are the `head` (pooler, classifier); Gathers that read
  a constant table are the `embeddings`;
- on an attention-fused graph (`search.fusion`) a layer's `Attention` node holds its Q/K/V
  projections and its score and context products: it is the layer's `qkv` group and marks
  the layer as a Softmax does, and the layer has no `scores` group (nothing to keep fp32).

A config names parts with *selectors*: `embeddings`, `head`, a role across every layer
(`qkv`, `attn_out`, `ffn_up`, `ffn_down`, `scores`), a whole layer (`layer3`,
`first_layer`, `last_layer`) or one role of one layer (`layer3.ffn_down`). `resolve` turns
selectors into node names, which Optimum's `nodes_to_exclude` takes.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from search.model_files import file_version

ROLES = ("qkv", "attn_out", "ffn_up", "ffn_down", "scores")
DENSE_ROLES = ("attn_out", "ffn_up", "ffn_down")  # a layer's weight MatMuls after attention
WHOLE = ("embeddings", "head")
SELECTOR = re.compile(
    r"^(embeddings|head|first_layer|last_layer|" + "|".join(ROLES) + r"|layer\d+"
    r"(\.(" + "|".join(ROLES) + r"))?|(first_layer|last_layer)\.(" + "|".join(ROLES) + r"))$"
)
# Operators a path may cross between a projection and the attention product it feeds
# (bias Add, head Reshape/Transpose, scaling Mul/Div, masking Add/Where, casts).
_PASS_THROUGH = {
    "Add",
    "Cast",
    "Div",
    "Mul",
    "Reshape",
    "Sqrt",
    "Sub",
    "Transpose",
    "Where",
    "Squeeze",
    "Unsqueeze",
    "Dropout",
    "Identity",
}
_MAX_HOPS = 8
# A whole attention block in one node (onnxruntime's transformer optimizer, `search.fusion`).
FUSED_ATTENTION = frozenset({"Attention", "QAttention", "MultiHeadAttention"})


def is_selector(text: str) -> bool:
    return bool(SELECTOR.match(text))


def is_scores_group(selector: str) -> bool:
    """A selector of attention score products: no node of an attention-fused graph."""
    return selector.split(".")[-1] == "scores"


def selector_help() -> str:
    return (
        "embeddings, head, a role (" + ", ".join(ROLES) + "), a layer (layer0, first_layer, "
        "last_layer) or a layer's role (layer0.ffn_down, last_layer.qkv)"
    )


@dataclass(frozen=True)
class Structure:
    """The model's parts: `groups` maps `layer<i>.<role>`, `embeddings` and `head` to the
    names of their nodes; `weight_matmuls` and `activation_matmuls` partition its MatMuls."""

    layers: int
    groups: Mapping[str, tuple[str, ...]]
    weight_matmuls: tuple[str, ...]
    activation_matmuls: tuple[str, ...]

    def selected_groups(self, selector: str) -> list[str]:
        """Group names a selector stands for (empty when the model has no such part)."""
        if selector in WHOLE:
            return [selector] if selector in self.groups else []
        layer, _, role = selector.partition(".")
        if layer in ROLES and not role:
            layer, role = "", layer
        if layer == "first_layer":
            layer = "layer0"
        elif layer == "last_layer":
            layer = f"layer{self.layers - 1}"
        layers = [layer] if layer else [f"layer{i}" for i in range(self.layers)]
        if role:
            return [f"{lay}.{role}" for lay in layers if f"{lay}.{role}" in self.groups]
        return sorted(g for g in self.groups if g.split(".")[0] in layers)

    def resolve(self, selectors: Iterable[str]) -> tuple[str, ...]:
        """Node names of the parts `selectors` name; a selector naming no part of this model
        (`layer7` of a 6-layer model) is an error, so a typo cannot pass as "nothing kept"."""
        out: set[str] = set()
        for selector in selectors:
            names = self.selected_groups(selector)
            if not names:
                raise ValueError(
                    f"fp32 group `{selector}` must name a part of this model ({self.layers} "
                    f"layers; parts: {', '.join(sorted(self.groups))}), but it names none"
                )
            for name in names:
                out.update(self.groups[name])
        return tuple(sorted(out))

    def describe(self) -> str:
        """The parts in words, e.g. for `qsearch sensitivity` and the report."""
        counts = {}
        for group, names in self.groups.items():
            role = group.split(".")[-1]
            counts[role] = counts.get(role, 0) + len(names)
        parts = ", ".join(f"{role} {n}" for role, n in sorted(counts.items()))
        return f"{self.layers} layers; nodes per part: {parts}"


def find_structure(model) -> Structure:  # model: onnx.ModelProto
    """The encoder's parts, from the graph alone (see the module docstring)."""
    graph = model.graph
    nodes = list(graph.node)  # ONNX keeps nodes in topological order
    constants = {i.name for i in graph.initializer}
    constants |= {o for n in nodes if n.op_type == "Constant" for o in n.output}
    consumers: dict[str, list[int]] = {}
    producer: dict[str, int] = {}
    for index, node in enumerate(nodes):
        for name in node.input:
            consumers.setdefault(name, []).append(index)
        for name in node.output:
            producer[name] = index

    def downstream(index: int, targets: set[int]) -> int | None:
        """The first target reached from node `index` through pass-through operators."""
        frontier, seen = [index], {index}
        for _ in range(_MAX_HOPS):
            following = []
            for i in frontier:
                for out in nodes[i].output:
                    for j in consumers.get(out, ()):
                        if j in targets:
                            return j
                        if j not in seen and nodes[j].op_type in _PASS_THROUGH:
                            seen.add(j)
                            following.append(j)
            frontier = following
        return None

    def upstream_softmax(index: int) -> int | None:
        frontier, seen = [index], {index}
        for _ in range(_MAX_HOPS):
            before = []
            for i in frontier:
                for name in nodes[i].input:
                    j = producer.get(name)
                    if j is None or j in seen:
                        continue
                    if nodes[j].op_type == "Softmax":
                        return j
                    if nodes[j].op_type in _PASS_THROUGH:
                        seen.add(j)
                        before.append(j)
            frontier = before
        return None

    matmuls = [i for i, n in enumerate(nodes) if n.op_type in ("MatMul", "Gemm")]
    weights = [i for i in matmuls if len(nodes[i].input) > 1 and nodes[i].input[1] in constants]
    products = [i for i in matmuls if i not in set(weights)]
    softmaxes = [i for i, n in enumerate(nodes) if n.op_type == "Softmax"]
    fused = [i for i, n in enumerate(nodes) if n.op_type in FUSED_ATTENTION]
    layer_of_softmax = {s: k for k, s in enumerate(sorted(softmaxes + fused))}
    product_layer: dict[int, int] = {i: layer_of_softmax[i] for i in fused}
    for i in products:
        softmax = downstream(i, set(softmaxes))
        if softmax is None:
            softmax = upstream_softmax(i)
        if softmax is not None:
            product_layer[i] = layer_of_softmax[softmax]
    layers = len(set(product_layer.values()))
    groups: dict[str, list[str]] = {}

    def add(group: str, index: int) -> None:
        if nodes[index].name:  # the quantizer excludes nodes by name
            groups.setdefault(group, []).append(nodes[index].name)

    for i, layer in product_layer.items():
        add(f"layer{layer}.{'qkv' if i in fused else 'scores'}", i)
    qkv_layer: dict[int, int] = {}
    targets = set(product_layer)
    for i in weights:
        reached = downstream(i, targets)
        if reached is not None:
            qkv_layer[i] = product_layer[reached]
            add(f"layer{qkv_layer[i]}.qkv", i)
    # After a layer's last attention product, its dense MatMuls come in graph order; they
    # end where the next layer's projections begin (or, for the last layer, after as many
    # as the other layers have: the rest is the head).
    last_product = {}
    for i, layer in product_layer.items():
        last_product[layer] = max(i, last_product.get(layer, i))
    first_qkv = {}
    for i, layer in [*qkv_layer.items(), *((i, product_layer[i]) for i in fused)]:
        first_qkv[layer] = min(i, first_qkv.get(layer, i))
    dense: dict[int, list[int]] = {}
    for layer in range(layers):
        end = first_qkv.get(layer + 1, len(nodes))
        dense[layer] = [i for i in weights if last_product[layer] < i < end and i not in qkv_layer]
    per_layer = len(dense[0]) if layers > 1 else len(DENSE_ROLES)
    if layers:
        tail = dense[layers - 1]
        dense[layers - 1], head = tail[:per_layer], tail[per_layer:]
        for i in head:
            add("head", i)
    for layer, members in dense.items():
        roles = DENSE_ROLES if len(members) == len(DENSE_ROLES) else None
        for k, i in enumerate(members):
            add(f"layer{layer}.{roles[k] if roles else f'dense{k}'}", i)
    for node in nodes:
        if node.op_type == "Gather" and node.input and node.input[0] in constants and node.name:
            groups.setdefault("embeddings", []).append(node.name)
    return Structure(
        layers=layers,
        groups={k: tuple(v) for k, v in groups.items()},
        weight_matmuls=tuple(nodes[i].name for i in weights if nodes[i].name),
        activation_matmuls=tuple(nodes[i].name for i in products if nodes[i].name),
    )


@functools.lru_cache(maxsize=8)
def _structure_of(path: str, mtime_ns: int, size: int) -> Structure:
    import onnx

    return find_structure(onnx.load(path, load_external_data=False))


def model_structure(path: Path) -> Structure:
    """`find_structure` of a model file, computed once per file version."""
    return _structure_of(*file_version(path))
