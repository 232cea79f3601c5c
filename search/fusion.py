"""Fused attention: the fp32 model rewritten by onnxruntime's transformer optimizer, once.

`QuantConfig.attention_fusion` quantizes this rewritten model instead of the export. Each
layer's attention block (Q/K/V projections, score and context MatMuls, Softmax, Transposes)
becomes one `Attention` node, which dynamic quantization turns into `QAttention` when
"Attention" is among the quantized operators. onnxruntime's own session optimizer does not do
this: at level "all" the default MiniLM keeps its 48 MatMuls and 6 Softmax (checked with
`optimized_model_filepath`, onnxruntime 1.32), so the fused kernel is only reached this way.

Only the attention fusion is asked for. The optimizer's other fusions are switched off:
SkipLayerNormalization (the session fuses it too, and the search already decides whether it
should: on the quantized MiniLM that kernel cost 17 of ~98 ms) and EmbedLayerNormalization
(which would swallow the embedding Gathers, so `Gather` quantization and the `embeddings`
group would silently mean nothing). The optimizer runs at `opt_level=0`, its Python fusions
only: the graph optimizations onnxruntime applies at session start are left to the session,
as for every other trial.

The fused file is kept under `$QSEARCH_HOME/fused/<key>.onnx`, keyed by a hash of the source
model's bytes, the fusion settings and onnxruntime's version: computed once per model (0.6 s
for MiniLM), shared by every trial, worker and later run, written to a temporary name and
renamed into place. The fp32 baseline a trial is timed against stays the unfused export.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from search.errors import ConfigError
from search.files import atomic_write
from search.model_files import file_sha256
from search.structure import FUSED_ATTENTION, is_scores_group

FUSION_FORMAT = 2


def check_fusable(mode: str, fp32_groups: tuple[str, ...]) -> None:
    """Refuse what `attention_fusion` cannot mean, before any trial.

    - Static mode: its calibration ranges are computed on the unfused graph (the cache is
      keyed by the export), and onnxruntime has no static `QAttention` (the QLinear and QDQ
      registries lack `Attention`), so only dynamic quantization can quantize a fused model.
    - An fp32 group of attention *scores* (`scores`, `layer3.scores`): on the fused graph the
      score and context products are inside the `Attention` kernel, so there is no such node
      to keep fp32. The other groups resolve against the fused graph's structure: `qkv` is the
      layer's `Attention` node (kept fp32: no `QAttention`), `attn_out`, `ffn_up`, `ffn_down`,
      `head` and `embeddings` are the same MatMuls and Gathers as before.
    """
    if mode != "dynamic":
        raise ConfigError(
            f"`attention_fusion` must be false in {mode} mode (calibration ranges are of the "
            f"unfused graph and onnxruntime has no static QAttention), but got true"
        )
    scores = [g for g in fp32_groups if is_scores_group(g)]
    if scores:
        raise ConfigError(
            f"`fp32_groups` must not name attention scores when `attention_fusion` is true "
            f"(the fused Attention kernel computes them; keep `qkv` fp32 instead), but got "
            f"{scores}"
        )


def _settings() -> dict:
    return {
        "format": FUSION_FORMAT,
        "model_type": "bert",
        "opt_level": 0,
        "only": "attention",  # skip/embed layer norm fusions off (module docstring)
    }


def fusion_key(fp32_model: Path) -> str:
    """Content hash of what the fused model depends on: source bytes, settings, onnxruntime."""
    import onnxruntime

    parts = {
        "model": file_sha256(fp32_model),
        "settings": _settings(),
        "onnxruntime": onnxruntime.__version__,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def fused_dir() -> Path:
    from search.tasks.default import qsearch_home

    return qsearch_home() / "fused"


def fused_model(fp32_model: Path, directory: Path | None = None) -> Path:
    """The attention-fused copy of `fp32_model` (computed on first use, then read back).

    A model in which the optimizer finds no attention block to fuse is refused with a
    ConfigError: quantizing it "fused" would silently be the unfused config again."""
    fp32_model = Path(fp32_model)
    directory = fused_dir() if directory is None else Path(directory)
    path = directory / f"{fusion_key(fp32_model)}.onnx"
    if not path.is_file():
        model = fuse_attention(fp32_model)
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, "wb") as f:  # readers see no file or the whole one
            f.write(model.SerializeToString())
    return path


def fuse_attention(fp32_model: Path):  # -> onnx.ModelProto
    """onnxruntime's BERT optimizer with only attention fusion, plus the tensor types the
    quantizer needs.

    The quantizer reads every tensor's type from ONNX shape inference, which knows nothing of
    the `com.microsoft` Attention op, and fails ("Unable to find data type ... DefaultTensorType")
    on the MatMul after it. Optimum's `ORTQuantizer` cannot pass `DefaultTensorType`, so the
    types are written into the model instead, by onnxruntime's symbolic shape inference,
    which knows its contrib ops (0.15 s on MiniLM)."""
    import onnx
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    from search.quantize import quiet_libraries

    quiet_libraries()
    options = FusionOptions("bert")
    options.enable_skip_layer_norm = False
    options.enable_bias_skip_layer_norm = False
    options.enable_embed_layer_norm = False
    optimized = optimize_model(
        str(fp32_model),
        model_type="bert",
        num_heads=0,  # 0: read from the graph
        hidden_size=0,
        opt_level=0,
        optimization_options=options,
    )
    model = optimized.model
    if not any(node.op_type in FUSED_ATTENTION for node in model.graph.node):
        raise ConfigError(
            f"`attention_fusion` must only be true for a model with attention blocks that "
            f"onnxruntime's BERT optimizer can fuse, but it fused none in {fp32_model}"
        )
    # The fused ops live in onnxruntime's `com.microsoft` domain; the optimizer's in-memory
    # model does not always import it (its `save_model_to_file` adds it), and the quantizer's
    # shape inference then fails on the first Attention node.
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    try:
        return SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    except Exception as exc:  # noqa: BLE001 - a library failure, reported in its words
        raise ConfigError(
            f"`attention_fusion` needs the fused model's tensor types, but onnxruntime's "
            f"symbolic shape inference failed on {fp32_model}: {exc}"
        ) from None


def source_model(config, fp32_model: Path) -> Path:  # config: QuantConfig
    """The model a config quantizes: the fused copy with `attention_fusion`, else the export.
    Node scopes and fp32 groups are resolved against this model's structure."""
    return fused_model(fp32_model) if config.attention_fusion else Path(fp32_model)
