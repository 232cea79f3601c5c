import optuna
import pytest
from typer.testing import CliRunner

from search.cli import app
from search.errors import ConfigError, SpaceError
from search.space import SearchSpace, load_space, shipped_spaces
from search.space_walk import all_configs, neighbours

MODEL_OPS = [
    "Add",
    "Gather",
    "Gemm",
    "LayerNormalization",
    "MatMul",
    "Mul",
    "Softmax",
    "Transpose",
    "Where",
    "Erf",
]


def test_every_shipped_space_parses_and_binds_to_a_bert():
    names = {p.stem for p in shipped_spaces()}
    assert {"default", "operators"} <= names
    for path in shipped_spaces():
        space = SearchSpace.from_file(path).resolve(MODEL_OPS)
        assert space.operators


def test_default_space_has_every_dimension():
    space = load_space("default")
    for name in (
        "mode",
        "format",
        "per_channel",
        "reduce_range",
        "activations_dtype",
        "weights_dtype",
        "activations_symmetric",
        "weights_symmetric",
        "calibration",
        "percentile",
        "graph_optimization",
    ):
        assert len(space.choices(name)) >= 2, name
    assert space.disable_fusions == ("SkipLayerNormFusion",)


def test_operators_space_is_the_seed_space():
    space = load_space("operators").resolve(MODEL_OPS)
    assert space.choices("mode") == ("dynamic",)
    assert space.operators == ("Gather", "MatMul", "Transpose")  # "all", as the seed
    configs = list(all_configs(space))
    assert len(configs) == 7 and len({c.key for c in configs}) == 7


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("[quantization]\nmode = ['dynamic'\n", ["must be valid TOML"]),
        ("[quantisation]\nmode = ['dynamic']\n", ["`quantisation` is not a known key", "allowed"]),
        ("[quantization]\nmodes = ['dynamic']\n", ["`quantization.modes`", "mode, format"]),
        (
            "[quantization]\nmode = ['fast']\n",
            ["`quantization.mode`", "'dynamic', 'static'", "'fast'"],
        ),
        ("[quantization]\nper_channel = ['yes']\n", ["must hold bool values"]),
        ("[quantization]\noperators = ['MatMul', 'Conv2D']\n", ["unknown ['Conv2D']"]),
        ("[quantization]\nmode = []\n", ["must list at least one value"]),
        ("[quantization]\nmode = ['dynamic']\nformat = ['QDQ']\n", ['must include "QOperator"']),
        (
            "[quantization]\nmode = ['dynamic']\n[calibration]\nmethod = ['entropy']\n",
            ["applies to static quantization only"],
        ),
        (
            "[quantization]\nmode = ['static']\n[calibration]\nmethod = ['minmax']\n"
            "percentile = [99.9]\n",
            ['needs calibration.method to include "percentile"'],
        ),
        (
            "[quantization]\nmode = ['dynamic']\noperators = ['Add']\n",
            ["which no mode of this space quantizes"],
        ),
        ("[session]\ndisable_fusions = ['SkipLayerNorm']\n", ["SkipLayerNormFusion"]),
        ("", ["must declare at least one dimension", "[quantization] (mode,", "[session]"]),
        ("name = 'x'\ndescription = 'y'\n", ["must declare at least one dimension"]),
        ("[quantization]\n[session]\n", ["must declare at least one dimension"]),
        (
            "[quantization]\nmode = ['static']\nactivations_dtype = ['int8', 'uint8']\n"
            "weights_dtype = ['uint8', 'int8']\n",
            ['`quantization.weights_dtype` must start with "int8"', "S8U8"],
        ),
        (
            "[quantization]\nmode = ['dynamic', 'static']\nactivations_dtype = ['int8']\n"
            "weights_dtype = ['uint8']\n",
            ['`quantization.weights_dtype` must include "int8"', "S8U8"],
        ),
    ],
)
def test_bad_spaces_are_refused_with_file_key_and_allowed_values(text, fragments):
    with pytest.raises(SpaceError) as info:
        SearchSpace.from_text(text, source="bad.toml")
    message = str(info.value)
    assert message.startswith("bad.toml:")
    for fragment in fragments:
        assert fragment in message


def test_missing_file_names_the_shipped_spaces(tmp_path):
    with pytest.raises(SpaceError, match="default.toml"):
        SearchSpace.from_file(tmp_path / "nope.toml")


def test_operator_absent_from_the_model_is_refused_naming_what_the_model_has():
    space = SearchSpace.from_text("[quantization]\noperators = ['MatMul', 'Conv']\n", "s.toml")
    with pytest.raises(SpaceError) as info:
        space.resolve(MODEL_OPS)
    assert "['Conv']" in str(info.value) and "MatMul" in str(info.value)


def test_suggest_and_params_round_trip_through_optuna():
    space = load_space("default").resolve(MODEL_OPS)
    study = optuna.create_study(
        directions=["maximize", "maximize"], sampler=optuna.samplers.RandomSampler(seed=1)
    )
    seen = 0
    for _ in range(30):
        trial = study.ask()
        try:
            config = space.suggest(trial)
        except ConfigError:  # an empty operator set, or static S8U8, is refused
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        assert space.contains(config)
        assert space.suggest(optuna.trial.FixedTrial(space.params(config))) == config
        if config.mode == "dynamic":
            assert "calibration" not in trial.params  # conditional: only static suggests it
        study.tell(trial, [0.5, 1.0])
        seen += 1
    assert seen > 10


def test_neighbours_differ_by_one_step_and_stay_in_the_space():
    space = load_space("default").resolve(MODEL_OPS)
    start = space.default_config(["MatMul"])
    near = list(neighbours(space, start))
    assert near and all(space.contains(n) for n in near)
    assert start.key not in {n.key for n in near}
    assert any(n.operators == ("Gather", "MatMul") for n in near)
    assert any(n.mode == "static" for n in near)
    assert any(n.disabled_fusions == ("SkipLayerNormFusion",) for n in near)


def test_static_s8u8_is_left_out_of_a_space_that_lists_both_types():
    space = load_space("static").resolve(MODEL_OPS)
    configs = list(all_configs(space))
    assert not any(c.activations_dtype == "int8" and c.weights_dtype == "uint8" for c in configs)
    assert any(c.activations_dtype == "int8" for c in configs)  # S8S8 stays
    assert any(c.weights_dtype == "uint8" for c in configs)  # U8U8 stays
    start = space.default_config(["MatMul"]).replace(activations_dtype="int8")
    assert all(n.weights_dtype == "int8" for n in neighbours(space, start))


@pytest.mark.parametrize(
    "args", [["spaces", "validate", "empty.toml"], ["run", "--space", "empty.toml"]]
)
def test_an_empty_space_file_is_refused_by_every_command(args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty.toml").write_text("")
    # a task folder that does not exist: were the space accepted, `run` would stop there
    result = CliRunner().invoke(app, [*args, "--task-dir", "missing"] if args[0] == "run" else args)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: empty.toml: a space must declare at least one")
    assert "[quantization]" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "studies").exists()


def test_a_sampler_sees_only_dimensions_that_change_the_model():
    from search.config import QuantConfig

    ops = ["Add", "Gather", "Gemm", "LayerNormalization", "MatMul", "Mul", "Softmax"]
    space = load_space("default").resolve(ops)
    study = optuna.create_study(directions=["maximize", "maximize"])
    dynamic = QuantConfig(operators=("Gather",))  # no MatMul: no scope to choose
    static = QuantConfig(mode="static", operators=("Add", "MatMul"), matmul_scope="weights")
    for config in (dynamic, static):
        params = space.params(config)
        study.enqueue_trial(params)
        assert space.suggest(study.ask()).key == config.key
        # dynamic quantization has no kernel for Add, LayerNormalization, Mul or Softmax
        assert ("op.Add" in params) == (config.mode == "static")
        assert ("matmul_scope" in params) == ("MatMul" in config.operators)
