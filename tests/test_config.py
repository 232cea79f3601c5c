import itertools
import json

import pytest

from search.config import QuantConfig, optimum_dynamic_presets, quantizable_operators
from search.errors import ConfigError


def test_dynamic_ignores_static_only_values_so_equal_models_share_a_key():
    a = QuantConfig(
        mode="dynamic",
        operators=("MatMul",),
        activations_symmetric=True,
        calibration="entropy",
        format="QDQ",
    )
    b = QuantConfig(mode="dynamic", operators=("MatMul",))
    assert a == b and a.key == b.key
    assert a.format == "QOperator" and a.calibration is None and a.activations_dtype == "uint8"


def test_operators_without_a_kernel_in_the_mode_are_dropped():
    config = QuantConfig(mode="dynamic", operators=("MatMul", "Add", "Softmax"))
    assert config.operators == ("MatMul",)
    assert "Add" not in quantizable_operators("dynamic")
    assert "Add" in quantizable_operators("static", "QOperator")


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"mode": "fast"}, "`mode` must be one of 'dynamic', 'static'"),
        ({"weights_dtype": "int4"}, "`weights_dtype` must be one of"),
        ({"operators": ("Conv2D",)}, "must be quantizable operator types"),
        ({"operators": ("Add",)}, "at least one operator that dynamic"),
        ({"mode": "static", "calibration": "kl"}, "`calibration` must be one of"),
        ({"mode": "static", "calibration": "percentile", "percentile": 50.0}, "between 90"),
        ({"per_channel": "yes"}, "`per_channel` must be true or false"),
        ({"disabled_fusions": ("NoSuchFusion",)}, "`disabled_fusions` must be one of"),
        (
            {"mode": "static", "activations_dtype": "int8", "weights_dtype": "uint8"},
            "`weights_dtype` must be 'int8' when static quantization has int8 activations",
        ),
    ],
)
def test_invalid_values_are_refused_naming_the_field(changes, fragment):
    with pytest.raises(ConfigError, match=None) as info:
        QuantConfig(**{"operators": ("MatMul",), **changes})
    assert fragment in str(info.value)


def test_every_type_combination_that_is_not_refused_converts_to_optimum():
    """Optimum's QuantizationConfig refuses static S8U8 (and dynamic int8 activations, which
    dynamic mode resets to uint8): QuantConfig refuses exactly what Optimum would."""
    from onnxruntime.quantization import QuantFormat, QuantType
    from optimum.onnxruntime.configuration import QuantizationConfig

    for mode, fmt, acts, weights in itertools.product(
        ("dynamic", "static"), ("QOperator", "QDQ"), ("uint8", "int8"), ("uint8", "int8")
    ):
        values = dict(mode=mode, format=fmt, activations_dtype=acts, weights_dtype=weights)
        try:
            config = QuantConfig(operators=("MatMul",), **values)
        except ConfigError:
            assert (mode, acts, weights) == ("static", "int8", "uint8")
            with pytest.raises(ValueError, match="QuantType.QInt8 with weights_dtype"):
                QuantizationConfig(
                    is_static=True,
                    format=QuantFormat.QDQ if fmt == "QDQ" else QuantFormat.QOperator,
                    activations_dtype=QuantType.QInt8,
                    weights_dtype=QuantType.QUInt8,
                )
        else:
            assert config.to_optimum().is_static == (mode == "static")


def test_json_round_trip():
    config = QuantConfig(
        mode="static",
        format="QDQ",
        operators=("MatMul", "Gemm"),
        calibration="percentile",
        percentile=99.99,
        disabled_fusions=("SkipLayerNormFusion",),
    )
    assert QuantConfig.from_dict(json.loads(config.to_json())) == config


def test_optimum_round_trip_reproduces_every_quantization_dimension():
    from onnxruntime.quantization import QuantFormat, QuantizationMode, QuantType

    config = QuantConfig(
        mode="static",
        format="QDQ",
        operators=("MatMul", "Add"),
        per_channel=True,
        reduce_range=True,
        activations_dtype="int8",
        weights_dtype="int8",
        activations_symmetric=True,
        weights_symmetric=False,
        excluded_nodes=("/classifier/Gemm",),
    )
    q = config.to_optimum()
    assert q.is_static and q.format == QuantFormat.QDQ and q.mode == QuantizationMode.QLinearOps
    assert q.activations_dtype == QuantType.QInt8 and q.weights_symmetric is False
    assert sorted(q.operators_to_quantize) == ["Add", "MatMul"]
    assert q.nodes_to_exclude == ["/classifier/Gemm"]
    back = QuantConfig.from_optimum(q, calibration=config.calibration)
    assert back == config


def test_optimum_presets_are_dynamic_and_the_vnni_family_is_one_config():
    presets = optimum_dynamic_presets()
    assert set(presets) == {"avx2", "avx512", "avx512_vnni", "arm64"}
    assert all(p.mode == "dynamic" and "MatMul" in p.operators for p in presets.values())
    assert presets["avx2"].weights_dtype == "uint8"
    assert presets["avx512"].key == presets["avx512_vnni"].key


def test_session_options_carry_disabled_fusions():
    config = QuantConfig(
        operators=("MatMul",), disabled_fusions=("SkipLayerNormFusion",), graph_optimization="basic"
    )
    options = config.session_options(threads=1)
    entry = options.get_session_config_entry("optimization.disable_specified_optimizers")
    assert entry == "SkipLayerNormFusion"
    assert "graph opt basic" in config.describe() and "no SkipLayerNormFusion" in config.describe()
