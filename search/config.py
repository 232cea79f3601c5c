"""QuantConfig: one point of the search space, frozen, validated and canonical.

Canonical means that two configs that produce the same quantized model compare equal: values
a mode ignores are reset (dynamic quantization has no calibration and always quantizes
activations to uint8) and operators that the mode has no quantized kernel for are dropped.
Equal configs share one `key`, so a search never evaluates the same model twice. A combination
that Optimum and onnxruntime refuse (static S8U8) is refused here, before any trial.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field, fields
from typing import Any

from search.errors import ConfigError
from search.fusion import check_fusable
from search.session_options import make_session_options
from search.structure import Structure, is_selector, selector_help

MODES = ("dynamic", "static")
FORMATS = ("QOperator", "QDQ")
DTYPES = ("uint8", "int8")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
GRAPH_OPTIMIZATION_LEVELS = ("all", "extended", "basic", "disabled")
# Which MatMul/Gemm nodes the quantizer may take: `all`, or only `weights` (a constant second
# input; onnxruntime's `MatMulConstBOnly`), leaving the attention products (activation x
# activation) in fp32, so Q, K and V share one DynamicQuantizeLinear per layer.
MATMUL_SCOPES = ("all", "weights")
# Fields added after studies were recorded: left out of `to_dict` (and so of `key`) at their
# default, so a config recorded before they existed keeps its key and a study resumes.
OPTIONAL_FIELDS = {
    "matmul_scope": "all",
    "fp32_groups": (),
    "attention_fusion": False,
    "smooth_quant": 0.0,
}
LIST_FIELDS = ("operators", "excluded_nodes", "fp32_groups", "disabled_fusions")
# onnxruntime graph transformers a search may switch off when the quantized model is run.
# Names as onnxruntime registers them (`optimization.disable_specified_optimizers`).
KNOWN_FUSIONS = (
    "SkipLayerNormFusion",
    "LayerNormFusion",
    "SimplifiedLayerNormFusion",
    "GeluFusion",
    "BiasGeluFusion",
    "FastGeluFusion",
    "AttentionFusion",
    "EmbedLayerNormFusion",
    "BiasSoftmaxFusion",
    "MatMulAddFusion",
    "MatMulScaleFusion",
    "GemmActivationFusion",
    "QDQSelectorActionTransformer",
    "QDQS8ToU8Transformer",
)


@functools.cache
def _registry(name: str) -> frozenset[str]:
    from onnxruntime.quantization import registry

    return frozenset(getattr(registry, name))


@functools.cache
def quantizable_operators(mode: str, format: str = "QOperator") -> frozenset[str]:
    """Operator types that have a quantized kernel in `mode` (and `format` for static mode).

    Taken from onnxruntime's own registries, so it follows the installed onnxruntime. Asking a
    mode to quantize anything else changes nothing in the model (seed 004's beam spent most of its
    365 trials re-timing such identical graphs).
    """
    if mode == "dynamic":
        return _registry("IntegerOpsRegistry")
    if format == "QDQ":
        return _registry("QDQRegistry") | _registry("QLinearOpsRegistry")
    return _registry("QLinearOpsRegistry")


@functools.cache
def all_quantizable_operators() -> frozenset[str]:
    """Every operator type any mode can quantize: what a space may name at all."""
    return quantizable_operators("dynamic") | quantizable_operators("static", "QDQ")


def unsupported_types(mode: str, activations_dtype: str, weights_dtype: str) -> str | None:
    """Why onnxruntime cannot quantize with these types, or None if it can.

    Static quantization with int8 activations and uint8 weights (S8U8) is the one combination
    of `DTYPES` that Optimum's `QuantizationConfig` (`ensure_valid_data_type_or_raise`) and
    onnxruntime's `quantize_static` (`check_static_quant_arguments`) both refuse. (Dynamic
    quantization's activations are always uint8, so it has none.)
    """
    if mode == "static" and activations_dtype == "int8" and weights_dtype == "uint8":
        return (
            "`weights_dtype` must be 'int8' when static quantization has int8 activations "
            "(onnxruntime has no S8U8 static quantization), but got 'uint8'"
        )
    return None


def _choice(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        allowed_text = ", ".join(repr(a) for a in allowed)
        raise ConfigError(f"`{name}` must be one of {allowed_text}, but got {value!r}")


def _bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"`{name}` must be true or false, but got {value!r}")


@dataclass(frozen=True)
class QuantConfig:
    """A post-training quantization configuration plus the session options that run it."""

    mode: str = "dynamic"
    format: str = "QOperator"
    operators: tuple[str, ...] = ("MatMul",)
    per_channel: bool = False
    reduce_range: bool = False
    activations_dtype: str = "uint8"
    weights_dtype: str = "int8"
    activations_symmetric: bool = False
    weights_symmetric: bool = True
    calibration: str | None = None
    percentile: float | None = None
    excluded_nodes: tuple[str, ...] = ()
    graph_optimization: str = "all"
    disabled_fusions: tuple[str, ...] = field(default=())
    matmul_scope: str = "all"
    # Parts of the model kept fp32, as `search.structure` selectors ("head", "layer5.ffn_down"):
    # resolved to node names against the model when it is quantized.
    fp32_groups: tuple[str, ...] = ()
    # Quantize the attention-fused copy of the model (`search.fusion`): one `Attention` node
    # per layer, `QAttention` when "Attention" is among the operators. Dynamic mode only.
    attention_fusion: bool = False
    # SmoothQuant's migration strength alpha (`search.smoothing`), 0 for none: the static
    # model is quantized from a copy whose activation outlier channels were moved into the
    # weights. Static mode with MatMuls only.
    smooth_quant: float = 0.0

    def __post_init__(self) -> None:
        _choice("mode", self.mode, MODES)
        _choice("format", self.format, FORMATS)
        _choice("activations_dtype", self.activations_dtype, DTYPES)
        _choice("weights_dtype", self.weights_dtype, DTYPES)
        _choice("graph_optimization", self.graph_optimization, GRAPH_OPTIMIZATION_LEVELS)
        for name in ("per_channel", "reduce_range", "activations_symmetric", "weights_symmetric"):
            _bool(name, getattr(self, name))
        _bool("attention_fusion", self.attention_fusion)
        for fusion in self.disabled_fusions:
            _choice("disabled_fusions", fusion, KNOWN_FUSIONS)
        _choice("matmul_scope", self.matmul_scope, MATMUL_SCOPES)
        for group in self.fp32_groups:
            if not isinstance(group, str) or not is_selector(group):
                raise ConfigError(f"`fp32_groups` must hold {selector_help()}, but got {group!r}")
        if (
            isinstance(self.smooth_quant, bool)
            or not isinstance(self.smooth_quant, int | float)
            or not 0.0 <= self.smooth_quant <= 1.0
        ):
            raise ConfigError(
                f"`smooth_quant` must be SmoothQuant's alpha, a number in (0, 1], or 0 for "
                f"none, but got {self.smooth_quant!r}"
            )
        set_ = object.__setattr__
        set_(self, "smooth_quant", float(self.smooth_quant))
        if self.mode == "dynamic":
            # onnxruntime's dynamic quantization has one form: QOperator with uint8 activations
            # quantized per batch, so these values cannot change the model.
            set_(self, "format", "QOperator")
            set_(self, "activations_dtype", "uint8")
            set_(self, "activations_symmetric", False)
            set_(self, "calibration", None)
            set_(self, "smooth_quant", 0.0)  # calibration data drives it: static mode only
        else:
            refused = unsupported_types(self.mode, self.activations_dtype, self.weights_dtype)
            if refused:
                raise ConfigError(refused)
            if self.calibration is None:
                set_(self, "calibration", "minmax")
            _choice("calibration", self.calibration, CALIBRATION_METHODS)
        if self.calibration == "percentile":
            if self.percentile is None:
                set_(self, "percentile", 99.999)
            if not isinstance(self.percentile, int | float) or not 90.0 < self.percentile < 100.0:
                raise ConfigError(
                    f"`percentile` must be a number between 90 and 100 (exclusive), "
                    f"but got {self.percentile!r}"
                )
            set_(self, "percentile", float(self.percentile))
        else:
            set_(self, "percentile", None)
        usable = quantizable_operators(self.mode, self.format)
        unknown = sorted(set(self.operators) - all_quantizable_operators())
        if unknown:
            raise ConfigError(
                f"`operators` must be quantizable operator types "
                f"({', '.join(sorted(all_quantizable_operators()))}), but got {unknown}"
            )
        operators = tuple(sorted(set(self.operators) & usable))
        if not operators:
            raise ConfigError(
                f"`operators` must include at least one operator that {self.mode} "
                f"{'' if self.mode == 'dynamic' else self.format + ' '}quantization can quantize "
                f"({', '.join(sorted(usable))}), but got {list(self.operators)}"
            )
        set_(self, "operators", operators)
        if not {"MatMul", "Gemm"} & set(operators):
            set_(self, "matmul_scope", "all")  # no MatMul is quantized: the scope changes nothing
        if "MatMul" not in operators:
            set_(self, "smooth_quant", 0.0)  # it rescales weight MatMuls only
        set_(self, "fp32_groups", tuple(sorted(set(self.fp32_groups))))
        if self.attention_fusion:
            check_fusable(self.mode, self.fp32_groups)
        set_(self, "excluded_nodes", tuple(sorted(set(self.excluded_nodes))))
        set_(self, "disabled_fusions", tuple(sorted(set(self.disabled_fusions))))

    # --- identity -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        # Every field is a scalar or a tuple of strings: no deep copy (`asdict`) is needed, and
        # enumerating the default space hashes ~200,000 configs.
        data = self.values()
        for name, default in OPTIONAL_FIELDS.items():
            if data[name] == default:
                del data[name]
        for name in LIST_FIELDS:
            if name in data:
                data[name] = list(data[name])
        return data

    def values(self) -> dict[str, Any]:
        """Every field with its value (`to_dict` leaves the optional ones out at default)."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuantConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"config keys must be among {', '.join(sorted(known))}, but got {unknown}"
            )
        values = dict(data)
        for name in LIST_FIELDS:
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @property
    def key(self) -> str:
        """Content hash of the canonical config: equal keys mean the same model and options."""
        return hashlib.sha1(self.to_json().encode()).hexdigest()[:16]

    def replace(self, **changes: Any) -> QuantConfig:
        return QuantConfig.from_dict({**self.to_dict(), **changes})

    # --- words ----------------------------------------------------------------------------

    def describe(self) -> str:
        """The config in words, as a person would say it in a report."""
        a = "S8" if self.activations_dtype == "int8" else "U8"
        w = "S8" if self.weights_dtype == "int8" else "U8"
        parts = [self.mode]
        if self.mode == "static":
            parts.append(self.format)
        parts.append(f"{a}{w}")
        parts.append("per-channel" if self.per_channel else "per-tensor")
        if self.reduce_range:
            parts.append("reduce-range")
        if self.mode == "static":
            sym = "sym" if self.activations_symmetric else "asym"
            parts.append(f"act-{sym}")
        parts.append("w-sym" if self.weights_symmetric else "w-asym")
        if self.calibration == "percentile":
            parts.append(f"percentile {self.percentile:g}")
        elif self.calibration:
            parts.append(self.calibration)
        text = " ".join(parts) + "; ops " + "+".join(self.operators)
        if self.matmul_scope == "weights":
            text += " (weight MatMuls only)"
        if self.smooth_quant:
            text += f"; SmoothQuant alpha {self.smooth_quant:g}"
        if self.attention_fusion:
            text += "; fused attention" + (" (QAttention)" if "Attention" in self.operators else "")
        if self.fp32_groups:
            text += "; fp32: " + ", ".join(self.fp32_groups)
        if self.excluded_nodes:
            text += f"; {len(self.excluded_nodes)} nodes kept fp32"
        if self.graph_optimization != "all":
            text += f"; graph opt {self.graph_optimization}"
        if self.disabled_fusions:
            text += "; no " + ", ".join(self.disabled_fusions)
        return text

    # --- libraries ------------------------------------------------------------------------

    def nodes_to_exclude(self, structure: Structure | None = None) -> list[str]:
        """The node names kept fp32: the listed nodes, plus, found in the model's
        `structure`, the attention products (`matmul_scope = "weights"`) and the nodes of the
        `fp32_groups`."""
        nodes = set(self.excluded_nodes)
        if self.matmul_scope == "weights" or self.fp32_groups:
            if structure is None:
                raise ConfigError(
                    "a config with `matmul_scope` 'weights' or `fp32_groups` must be resolved "
                    "against its model's structure (search.structure.model_structure), but "
                    "none was given"
                )
            if self.matmul_scope == "weights":
                nodes.update(structure.activation_matmuls)
            try:
                nodes.update(structure.resolve(self.fp32_groups))
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        return sorted(nodes)

    def to_optimum(self, structure: Structure | None = None):  # -> QuantizationConfig
        """Optimum's QuantizationConfig for this config: `ORTQuantizer.quantize` reproduces
        it. Node scopes and fp32 groups become `nodes_to_exclude`, so an exported
        `ORTConfig` records the very nodes the trial kept fp32."""
        from onnxruntime.quantization import QuantFormat, QuantizationMode, QuantType
        from optimum.onnxruntime.configuration import QuantizationConfig

        dtype = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
        return QuantizationConfig(
            is_static=self.mode == "static",
            format=QuantFormat.QDQ if self.format == "QDQ" else QuantFormat.QOperator,
            mode=QuantizationMode.QLinearOps
            if self.mode == "static"
            else QuantizationMode.IntegerOps,
            activations_dtype=dtype[self.activations_dtype],
            activations_symmetric=self.activations_symmetric,
            weights_dtype=dtype[self.weights_dtype],
            weights_symmetric=self.weights_symmetric,
            per_channel=self.per_channel,
            reduce_range=self.reduce_range,
            nodes_to_exclude=self.nodes_to_exclude(structure),
            operators_to_quantize=list(self.operators),
        )

    @classmethod
    def from_optimum(cls, qconfig, **session: Any) -> QuantConfig:
        """The inverse of `to_optimum` (session options come separately: Optimum has none)."""
        from onnxruntime.quantization import QuantFormat, QuantType

        def dtype(q: Any) -> str:
            return "int8" if q == QuantType.QInt8 else "uint8"

        return cls(
            mode="static" if qconfig.is_static else "dynamic",
            format="QDQ" if qconfig.format == QuantFormat.QDQ else "QOperator",
            operators=tuple(getattr(o, "value", o) for o in qconfig.operators_to_quantize),
            per_channel=qconfig.per_channel,
            reduce_range=qconfig.reduce_range,
            activations_dtype=dtype(qconfig.activations_dtype),
            weights_dtype=dtype(qconfig.weights_dtype),
            activations_symmetric=qconfig.activations_symmetric,
            weights_symmetric=qconfig.weights_symmetric,
            excluded_nodes=tuple(qconfig.nodes_to_exclude),
            **session,
        )

    def session_options(self, threads: int = 1):  # -> onnxruntime.SessionOptions
        """The onnxruntime options this config is run with: part of what is searched."""
        return make_session_options(self.graph_optimization, self.disabled_fusions, threads)

    def session_key(self) -> tuple[str, tuple[str, ...]]:
        return (self.graph_optimization, self.disabled_fusions)


PRESETS = ("avx2", "avx512", "avx512_vnni", "arm64")


def optimum_dynamic_presets() -> dict[str, QuantConfig]:
    """Optimum's dynamic CPU presets (`AutoQuantizationConfig.<name>(is_static=False)`).

    A search is only worth running if it beats these, so `qsearch run` measures them beside the
    searched configs on the same worker.
    """
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    return {
        name: QuantConfig.from_optimum(getattr(AutoQuantizationConfig, name)(is_static=False))
        for name in PRESETS
    }
