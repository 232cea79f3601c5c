"""Sensitivity on the tiny BERT (2 layers), and the fallback strategy end to end through the
CLI: `qsearch run --fallback` computes the table once, stores it in the study, walks the
groups in its order (each step a timed trial); `qsearch sensitivity` prints it."""

import json

import optuna
from optuna.trial import TrialState
from typer.testing import CliRunner

from search.cli import app
from search.config import QuantConfig
from search.ranking import within_drop
from search.sensitivity import (
    BASE_ROW,
    compute_sensitivity,
    leave_one_in,
    order,
    quantized_groups,
)
from search.strategies.base import records
from search.strategies.fallback import GROUPS, PHASE
from search.structure import model_structure

runner = CliRunner()
STATIC = QuantConfig(mode="static", format="QOperator", operators=("MatMul",))


def test_sensitivity_of_each_quantized_group_is_measured_once_and_cached(tiny_task):
    structure = model_structure(tiny_task.model_path)
    groups = quantized_groups(structure, STATIC)
    # every MatMul group of both layers, and the head; not the Gathers (not quantized)
    assert "embeddings" not in groups and "head" in groups
    assert {f"layer{i}.{r}" for i in (0, 1) for r in ("qkv", "ffn_up", "ffn_down")} <= set(groups)
    weights = STATIC.replace(matmul_scope="weights")
    assert not any(g.endswith(".scores") for g in quantized_groups(structure, weights))
    only = leave_one_in(STATIC, "layer1.ffn_down", groups)
    assert set(only.fp32_groups) == set(groups) - {"layer1.ffn_down"}

    first = compute_sensitivity(tiny_task, STATIC)
    assert sorted(order(first)) == sorted(groups)
    errors = [row["mse"] for row in first["rows"]]
    assert errors == sorted(errors, reverse=True) and all(e >= 0 for e in errors)
    assert first["base_row"]["group"] == BASE_ROW and first["base_key"] == STATIC.key
    assert all(0 <= row["agreement"] <= 1 for row in first["rows"])
    again = compute_sensitivity(tiny_task, STATIC)  # from the disk cache: the same table
    assert again == json.loads(json.dumps(first))


# Static with the embeddings quantized too: on the tiny model it changes fp32's class for
# some examples, so the fallback has groups to revert before agreement reaches fp32's.
SPACE = """name = "tiny-static"
[quantization]
mode = ["static"]
operators = ["MatMul", "Gather"]
[fallback]
groups = ["head"]
"""


def test_fallback_run_end_to_end_on_the_tiny_task(workdir, tiny_task_dir):
    (workdir / "tiny-static.toml").write_text(SPACE)
    args = ["run", "--task-dir", tiny_task_dir, "--space", "tiny-static.toml", "--fallback"]
    args += ["--metric", "agreement", "--max-drop", "0", "--trials", "4"]
    args += ["--timing-seconds", "0.2", "--no-presets", "--no-seeds", "--no-confirm"]
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    name = f"{tiny_task_dir.name}-tiny-static-fallback"
    study = optuna.load_study(study_name=name, storage=f"sqlite:///studies/{name}.db")
    table = study.user_attrs["sensitivity"]
    ranked = order(table)
    steps = [r for r in records(study) if r.attrs.get("strategy") == "fallback"]
    assert len(steps) > 1 and steps[0].attrs[GROUPS] == [] and steps[0].attrs[PHASE] == "revert"
    fp32 = study.user_attrs["fp32_accuracy"]
    for k, step in enumerate(steps):
        # a real trial: measured and timed, or pruned as hopeless (provably below the bar)
        assert step.values is not None or step.state == TrialState.PRUNED
        if step.attrs[PHASE] == "revert":  # each step keeps the next most costly group fp32
            assert step.attrs[GROUPS] == ranked[:k]
            fp32_groups = set(step.attrs["config"].get("fp32_groups", []))
            assert fp32_groups == set(ranked[:k])
        if k < len(steps) - 1 and step.attrs[PHASE] == "revert":
            assert step.values is None or fp32 - step.values[0] > 1e-12  # below the bar
    report = (workdir / "reports" / f"{name}.html").read_text()
    assert 'id="sensitivity"' in report and 'id="fallback-path"' in report

    shown = runner.invoke(app, ["sensitivity", "--study", name])
    assert shown.exit_code == 0, shown.output
    assert ranked[0] in shown.output and "MSE" in shown.output
    missing = runner.invoke(app, ["sensitivity", "--study", "no-such-study"])
    assert missing.exit_code == 2 and "must exist" in missing.output


def test_sensitivity_of_a_study_without_a_measured_trial_is_a_clear_error(workdir):
    (workdir / "studies").mkdir()
    optuna.create_study(study_name="empty", storage="sqlite:///studies/empty.db")
    result = runner.invoke(app, ["sensitivity", "--study", "empty"])
    assert result.exit_code == 2 and "must hold a measured trial" in result.output
    assert "Traceback" not in result.output


def test_a_fallback_run_continues_a_beam_study_from_the_beams_fastest_config(
    workdir, tiny_task_dir
):
    """`make bench-static`'s path: a static beam, then `--fallback` in the same study, whose
    base is the fastest config the beam measured (within the bar or not)."""
    (workdir / "tiny-static.toml").write_text(SPACE)
    common = ["--task-dir", tiny_task_dir, "--space", "tiny-static.toml", "--study", "both"]
    common += ["--metric", "agreement", "--max-drop", "0", "--timing-seconds", "0.2"]
    common += ["--no-presets", "--no-seeds", "--no-confirm", "--no-report"]
    beam = runner.invoke(app, [str(a) for a in ["run", *common, "--beam", 2, "--trials", 3]])
    assert beam.exit_code == 0, beam.output
    study = optuna.load_study(study_name="both", storage="sqlite:///studies/both.db")
    measured = [r for r in records(study) if r.answers and r.values is not None]
    assert measured and not any(r.attrs.get("strategy") == "fallback" for r in measured)
    fastest = max(measured, key=lambda r: r.values[1])
    base = QuantConfig.from_dict(fastest.attrs["config"])

    fallback = runner.invoke(app, [str(a) for a in ["run", *common, "--fallback", "--trials", 12]])
    assert fallback.exit_code == 0, fallback.output
    study = optuna.load_study(study_name="both", storage="sqlite:///studies/both.db")
    assert study.user_attrs["sensitivity"]["base_key"] == base.key
    ranked = order(study.user_attrs["sensitivity"])
    steps = [r for r in records(study) if r.attrs.get("strategy") == "fallback"]
    fp32 = study.user_attrs["fp32_accuracy"]
    if within_drop(fastest.values[0], fp32, 0):  # the base is within the bar: nothing to revert
        assert steps == []
    else:  # the base's trial answers the first step; the next keeps the most costly group fp32
        assert steps and steps[0].attrs[GROUPS] == ranked[:1]
    for step in steps:
        config = QuantConfig.from_dict(step.attrs["config"])
        assert config.replace(fp32_groups=base.fp32_groups).key == base.key
        assert set(config.fp32_groups) == set(base.fp32_groups) | set(step.attrs[GROUPS])


def test_class_agreement_is_reported_only_where_outputs_are_classes():
    from types import SimpleNamespace

    import numpy as np

    from search.sensitivity import _fidelity

    rng = np.random.default_rng(0)
    fp32 = rng.normal(size=(20, 8))
    noisy = fp32 + rng.normal(scale=0.5, size=fp32.shape)
    features = _fidelity(SimpleNamespace(metric="cosine"), noisy, fp32, None)
    assert "agreement" not in features  # a sentence encoder's features are not classes
    assert features["metric_drop"] > 0 and features["mse"] > 0
    classes = _fidelity(SimpleNamespace(metric="agreement"), noisy, fp32, None)
    assert 0 <= classes["agreement"] < 1
