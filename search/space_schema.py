"""The space file format: TOML keys, allowed values, and the checks that refuse a bad space.

Every problem is found here, before any trial, and named with the file, the key and what is
allowed. `validate_space` returns the fields of a `SearchSpace`.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from search.config import (
    CALIBRATION_METHODS,
    DTYPES,
    FORMATS,
    GRAPH_OPTIMIZATION_LEVELS,
    KNOWN_FUSIONS,
    MATMUL_SCOPES,
    MODES,
    all_quantizable_operators,
    quantizable_operators,
    unsupported_types,
)
from search.errors import SpaceError
from search.structure import is_selector, selector_help

# section -> key -> (allowed values or None for free numbers, expected python type)
SCHEMA: dict[str, dict[str, tuple[tuple | None, type]]] = {
    "quantization": {
        "mode": (MODES, str),
        "format": (FORMATS, str),
        "operators": (None, str),
        "per_channel": ((False, True), bool),
        "reduce_range": ((False, True), bool),
        "activations_dtype": (DTYPES, str),
        "weights_dtype": (DTYPES, str),
        "activations_symmetric": ((False, True), bool),
        "weights_symmetric": ((False, True), bool),
        "excluded_nodes": (None, str),
        "matmul_scope": (MATMUL_SCOPES, str),
        # Quantize the attention-fused model (`search.fusion`); dynamic mode only. With it, the
        # space may quantize "Attention" (QAttention) though the export has no such node.
        "attention_fusion": ((False, True), bool),
    },
    "calibration": {
        "method": (CALIBRATION_METHODS, str),
        "percentile": (None, float),
        # SmoothQuant's alpha (`search.smoothing`), 0 for none: static MatMuls only.
        "smooth_quant": (None, float),
    },
    "session": {
        "graph_optimization": (GRAPH_OPTIMIZATION_LEVELS, str),
        "disable_fusions": (KNOWN_FUSIONS, str),
    },
    # Parts of the model that may stay fp32 (`search.structure` selectors), each a yes/no
    # dimension: the fallback Neural Compressor and NNCF apply after a failed accuracy check,
    # searched here like any other dimension.
    "fallback": {
        "groups": (None, str),
    },
}
TOP_LEVEL = ("name", "description")

# TOML key -> QuantConfig field for the one-of dimensions, in a fixed order.
DIMENSIONS = {
    ("quantization", "mode"): "mode",
    ("quantization", "format"): "format",
    ("quantization", "per_channel"): "per_channel",
    ("quantization", "reduce_range"): "reduce_range",
    ("quantization", "activations_dtype"): "activations_dtype",
    ("quantization", "weights_dtype"): "weights_dtype",
    ("quantization", "activations_symmetric"): "activations_symmetric",
    ("quantization", "weights_symmetric"): "weights_symmetric",
    ("calibration", "method"): "calibration",
    ("calibration", "percentile"): "percentile",
    ("calibration", "smooth_quant"): "smooth_quant",
    ("session", "graph_optimization"): "graph_optimization",
    ("quantization", "matmul_scope"): "matmul_scope",
    ("quantization", "attention_fusion"): "attention_fusion",
}
DEFAULTS = {
    "mode": ("dynamic",),
    "format": ("QOperator",),
    "per_channel": (False,),
    "reduce_range": (False,),
    "activations_dtype": ("uint8",),
    "weights_dtype": ("int8",),
    "activations_symmetric": (False,),
    "weights_symmetric": (True,),
    "calibration": ("minmax",),
    "percentile": (99.999,),
    "graph_optimization": ("all",),
    "matmul_scope": ("all",),
    "attention_fusion": (False,),
    "smooth_quant": (0.0,),
}
# Dimensions that exist only for static quantization: not suggested for dynamic trials.


def read_space_text(path: Path, shipped_dir: Path) -> str:
    if not path.exists():
        candidates = ", ".join(p.name for p in sorted(shipped_dir.glob("*.toml")))
        raise SpaceError(
            f"space file `{path}` must exist, but it does not "
            f"(shipped spaces in {shipped_dir}: {candidates})"
        )
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise SpaceError(f"{path}: must be a readable UTF-8 TOML file, but {exc}") from None


def parse_toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpaceError(f"{source}: must be valid TOML, but {exc}") from None


def validate_space(data: dict[str, Any], source: str) -> dict[str, Any]:
    """The checked fields of a SearchSpace, or a SpaceError naming the file and key."""

    def fail(key: str, message: str) -> SpaceError:
        return SpaceError(f"{source}: `{key}` {message}")

    allowed_top = set(SCHEMA) | set(TOP_LEVEL)
    for key in data:
        if key not in allowed_top:
            raise fail(key, f"is not a known key; allowed: {', '.join(sorted(allowed_top))}")
    if all(data.get(section) in (None, {}) for section in SCHEMA):
        # An empty file (or one with a name only) would search every default: the wrong file.
        tables = [f"[{section}] ({', '.join(keys)})" for section, keys in SCHEMA.items()]
        raise SpaceError(
            f"{source}: a space must declare at least one dimension, a key in "
            f"{', '.join(tables[:-1])} or {tables[-1]}, "
            f"but it declares none (`qsearch spaces list` shows the shipped spaces)"
        )
    name = data.get("name", Path(source).stem if source != "<space>" else "space")
    if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
        raise fail("name", f"must be a name of letters, digits, - and _, but got {name!r}")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise fail("description", f"must be a string, but got {description!r}")

    lists: dict[str, tuple] = {}
    for section, keys in SCHEMA.items():
        body = data.get(section, {})
        if not isinstance(body, dict):
            raise fail(section, f"must be a table ([{section}]), but got {body!r}")
        for key, value in body.items():
            full = f"{section}.{key}"
            if key not in keys:
                raise fail(full, f"is not a known key; allowed in [{section}]: {', '.join(keys)}")
            allowed, kind = keys[key]
            items = value if isinstance(value, list) else [value]
            if key == "operators" and value in ("auto", "all"):
                lists[full] = value
                continue
            if not items and key not in ("disable_fusions", "excluded_nodes", "groups"):
                raise fail(full, "must list at least one value, but the list is empty")
            for item in items:
                ok = isinstance(item, kind) and not (kind is not bool and isinstance(item, bool))
                if kind is float and isinstance(item, int) and not isinstance(item, bool):
                    ok = True
                if not ok:
                    raise fail(full, f"must hold {kind.__name__} values, but got {item!r}")
                if allowed is not None and item not in allowed:
                    shown = ", ".join(repr(a) for a in allowed)
                    raise fail(full, f"must be among {shown}, but got {item!r}")
            if len(set(items)) != len(items):
                raise fail(full, f"must not repeat values, but got {items!r}")
            lists[full] = tuple(items)

    operators = lists.get("quantization.operators", "auto")
    if isinstance(operators, str):
        operators_rule, operators = operators, None
    else:
        operators_rule = "list"
    if operators is not None:
        known = all_quantizable_operators()
        unknown = [op for op in operators if op not in known]
        if unknown:
            raise fail(
                "quantization.operators",
                f"must name quantizable operator types ({', '.join(sorted(known))}) "
                f'or be "auto", but got unknown {unknown}',
            )
    for group in lists.get("fallback.groups", ()):
        if not is_selector(group):
            raise fail("fallback.groups", f"must hold {selector_help()}, but got {group!r}")
    values = []
    for (section, key), field_name in DIMENSIONS.items():
        values.append((field_name, lists.get(f"{section}.{key}", DEFAULTS[field_name])))
    fields = dict(
        name=name,
        description=description,
        source=source,
        values=tuple(values),
        operators=operators,
        operators_rule=operators_rule,
        disable_fusions=lists.get("session.disable_fusions", ()),
        excluded_nodes=lists.get("quantization.excluded_nodes", ()),
        fallback_groups=lists.get("fallback.groups", ()),
    )
    _check_combinations(dict(values), operators, fail, [k for k in lists if k.startswith("calib")])
    return fields


def _check_combinations(
    choices: dict[str, tuple], operators, fail, static_keys: Sequence[str]
) -> None:
    modes = choices["mode"]
    if "static" not in modes and static_keys:
        raise fail(
            static_keys[0],
            "applies to static quantization only, but quantization.mode "
            'does not include "static"; add it or remove the [calibration] section',
        )
    if "calibration.percentile" in static_keys and "percentile" not in choices["calibration"]:
        raise fail("calibration.percentile", 'needs calibration.method to include "percentile"')
    for pct in choices["percentile"]:
        if not 90.0 < float(pct) < 100.0:
            raise fail("calibration.percentile", f"must be between 90 and 100, but got {pct}")
    for alpha in choices["smooth_quant"]:
        if not 0.0 <= float(alpha) <= 1.0:
            raise fail(
                "calibration.smooth_quant",
                f"must hold SmoothQuant alphas in (0, 1], or 0 for none, but got {alpha}",
            )
    # onnxruntime has no static S8U8 quantization: the space skips such configs, but its first
    # values (the default config, where the beam starts) must not be one, nor every static one.
    acts, weights = choices["activations_dtype"], choices["weights_dtype"]
    if unsupported_types(modes[0], acts[0], weights[0]):
        raise fail(
            "quantization.weights_dtype",
            f'must start with "int8" when the first mode is "static" and the first '
            f'activations_dtype "int8" (the first values make the default config, and '
            f"onnxruntime has no static S8U8 quantization), but got {list(weights)}",
        )
    if "static" in modes and all(unsupported_types("static", a, w) for a in acts for w in weights):
        raise fail(
            "quantization.weights_dtype",
            f'must include "int8" when mode includes "static" and activations_dtype is '
            f"{list(acts)} (onnxruntime has no static S8U8 quantization), but got "
            f"{list(weights)}",
        )
    if True in choices["attention_fusion"] and "dynamic" not in modes:
        raise fail(
            "quantization.attention_fusion",
            "applies to dynamic quantization only (onnxruntime has no static QAttention), "
            'but quantization.mode does not include "dynamic"; add it or remove the key',
        )
    if modes == ("dynamic",):
        for key, allowed in (("format", "QOperator"), ("activations_dtype", "uint8")):
            if allowed not in choices[key]:
                raise fail(
                    f"quantization.{key}",
                    f'must include "{allowed}" when mode is only '
                    f'"dynamic" (dynamic quantization has no other), but got '
                    f"{list(choices[key])}",
                )
    if operators is not None:
        usable = usable_operators(choices)
        useless = [op for op in operators if op not in usable]
        if useless:
            raise fail(
                "quantization.operators",
                f"must name operators that mode "
                f"{list(modes)} can quantize ({', '.join(sorted(usable))}), but got "
                f"{useless}, which no mode of this space quantizes",
            )


def usable_operators(choices: dict[str, tuple]) -> frozenset[str]:
    """Operator types that some mode and format of a space can quantize."""
    usable: set[str] = set()
    for mode in choices["mode"]:
        for fmt in choices["format"] if mode == "static" else ("QOperator",):
            usable |= quantizable_operators(mode, fmt)
    return frozenset(usable)
