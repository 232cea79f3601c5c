"""QuantConfig + fp32 model (+ calibration ranges) -> a quantized ONNX file, through Optimum.

Optimum's `ORTQuantizer` expresses every dimension of `QuantConfig` but the session options,
which are applied when the model is run (see `QuantConfig.session_options`); node scopes and
fp32 groups are resolved against the model's structure into `nodes_to_exclude`. A config with
`attention_fusion` quantizes the attention-fused copy of the model (`search.fusion`), and its
scopes and groups are resolved against that copy's structure; a SmoothQuant config
quantizes its smoothed copy (`search.smoothing`), the Muls it inserted kept fp32.
"""

from __future__ import annotations

import logging
from pathlib import Path

from search.channel_weights import per_channel_weights_reused
from search.config import QuantConfig
from search.fusion import source_model
from search.inferred import inferred_model, second_inference_skipped
from search.smoothing import smoothing_nodes
from search.structure import model_structure


def quiet_libraries() -> None:
    """Optimum, onnxruntime and Optuna log every step at INFO; a search prints its own
    progress."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for name in ("optimum", "optimum.onnxruntime", "onnxruntime", "root", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        import transformers

        transformers.logging.set_verbosity_error()
    except ImportError:
        pass


def quantization_source(config: QuantConfig, fp32_model: Path, smoothed: Path | None) -> Path:
    """The model a config quantizes: its SmoothQuant copy (`search.smoothing`, computed
    from calibration data by `CalibrationCache.smoothed`), the attention-fused copy, or the
    export itself."""
    if config.smooth_quant:
        if smoothed is None:
            raise ValueError("a SmoothQuant config must be quantized from its smoothed copy")
        return Path(smoothed)
    return source_model(config, fp32_model)


def optimum_config(config: QuantConfig, model: Path):  # -> QuantizationConfig
    """Optimum's config for quantizing `model` (the source): groups and scopes resolved
    against its structure, and the Muls SmoothQuant inserted kept fp32."""
    qconfig = config.to_optimum(model_structure(model))
    if config.smooth_quant:
        kept = set(qconfig.nodes_to_exclude) | set(smoothing_nodes(model))
        qconfig.nodes_to_exclude = sorted(kept)
    return qconfig


def quantize(
    config: QuantConfig,
    fp32_model: Path,
    out_dir: Path,
    ranges=None,
    smoothed: Path | None = None,
) -> Path:
    """Write the quantized model for `config` into `out_dir` and return its path.

    Optimum is pointed at the source's shape-inferred copy (`search.inferred`: the
    quantizer's own inference, done once per model instead of once or twice per trial), in a
    folder of its own: given the model's own folder Optimum loads and re-saves the tokenizer
    beside every quantized file (0.2 s a trial here, for files nobody reads; `qsearch export`
    writes the tokenizer itself), and a model over 2 GB has its weights beside it there
    (onnx refuses them through a link). Weights quantized per channel before in this process
    are reused (`search.channel_weights`). The output is named after `fp32_model` whichever
    copy was quantized."""
    from optimum.onnxruntime import ORTQuantizer

    quiet_libraries()
    fp32_model = Path(fp32_model).resolve()
    model = quantization_source(config, fp32_model, smoothed).resolve()
    inferred = inferred_model(model, dynamic=config.mode == "dynamic")
    out_dir = Path(out_dir)
    quantizer = ORTQuantizer.from_pretrained(inferred.parent, file_name=inferred.name)
    with second_inference_skipped(inferred), per_channel_weights_reused():
        quantizer.quantize(
            quantization_config=optimum_config(config, model),
            save_dir=out_dir,
            calibration_tensors_range=ranges if config.mode == "static" else None,
        )
    written = out_dir / f"{inferred.stem}_quantized.onnx"
    path = out_dir / f"{fp32_model.stem}_quantized.onnx"
    if written != path:
        written.replace(path)
    return path
