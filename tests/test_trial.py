"""Real trials on the tiny BERT: real Optimum/onnxruntime quantization and timing."""

import math

import numpy as np
import onnx
import optuna
import pytest

from search.config import QuantConfig
from search.errors import TrialError
from search.measure import TimingSettings
from search.objective import Evaluator
from search.runner import evaluate_into
from search.stats import bootstrap_median

FAST = TimingSettings(seconds=0.3, warmup_runs=1, block_pairs=2, min_blocks=2)


@pytest.fixture(scope="module")
def evaluator(tiny_task):
    ev = Evaluator(tiny_task, FAST)
    yield ev
    ev.close()


def test_dynamic_trial_quantizes_scores_and_times_against_fp32(evaluator, tiny_task):
    result = evaluator.evaluate(QuantConfig(operators=("MatMul", "Gather")))
    a = result.attrs
    assert 0.0 <= result.accuracy <= 1.0 and result.speedup > 0
    assert a["speedup_low"] <= result.speedup <= a["speedup_high"]
    assert a["model_size_mb"] < a["model_size_fp32_mb"] / 2  # Gather quantizes the embeddings
    assert a["timing"]["pairs"] >= 4 and a["timing"]["blocks"] >= 2
    assert a["accuracy_diff_low"] <= a["accuracy_diff"] <= a["accuracy_diff_high"]
    assert a["accuracy_diff"] == pytest.approx(result.accuracy - a["accuracy_fp32"])
    assert a["worker"]["cpu"] and "onnxruntime" in a["worker"]
    assert set(a["phase_seconds"]) == {"calibrate", "quantize", "accuracy", "timing"}
    assert a["accuracy_fp32"] == pytest.approx(evaluator.fp32_accuracy)
    assert not list(evaluator.workdir.iterdir())  # the quantized model was removed


def test_static_trial_uses_cached_calibration_ranges(evaluator):
    config = QuantConfig(mode="static", format="QDQ", operators=("MatMul",))
    first = evaluator.evaluate(config)
    assert len(evaluator.calibration._ranges) == 1
    evaluator.evaluate(config.replace(operators=["MatMul", "Gemm"]))
    assert len(evaluator.calibration._ranges) == 1  # same method: ranges reused
    assert math.isfinite(first.accuracy)


def test_reused_ranges_give_the_same_logits_as_fresh_calibration(tiny_task, tmp_path):
    from search.calibrate import compute_ranges
    from search.measure import make_session
    from search.quantize import quantize

    config = QuantConfig(mode="static", format="QOperator", operators=("MatMul",))
    shared = compute_ranges(tiny_task, config)  # computed with every static operator
    fresh = compute_ranges(tiny_task, config)
    a = make_session(quantize(config, tiny_task.model_path, tmp_path / "a", shared))
    b = make_session(quantize(config, tiny_task.model_path, tmp_path / "b", fresh))
    batch = tiny_task.eval_batches[0]
    np.testing.assert_array_equal(a.run(None, batch.inputs)[0], b.run(None, batch.inputs)[0])


def test_session_options_change_the_running_graph_not_the_file(evaluator):
    result = evaluator.evaluate(
        QuantConfig(operators=("MatMul",), disabled_fusions=("SkipLayerNormFusion",))
    )
    assert result.attrs["fp32_options_speedup"] > 0
    assert "no SkipLayerNormFusion" in result.attrs["description"]


def test_histogram_calibration_on_mask_operators_fails_with_a_reason(evaluator):
    with pytest.raises(TrialError, match="attention mask"):
        evaluator.evaluate(
            QuantConfig(mode="static", operators=("MatMul", "Add"), calibration="entropy")
        )


def test_a_model_onnxruntime_cannot_load_is_a_failed_trial_and_the_search_goes_on(
    evaluator, monkeypatch
):
    import search.objective as objective

    def broken_quantize(config, fp32_model, out_dir, ranges=None):
        path = out_dir / "model_quantized.onnx"
        model = onnx.load(str(fp32_model))
        model.graph.node[0].op_type = "NoSuchOperator"  # a graph onnxruntime refuses
        onnx.save(model, str(path))
        return path

    monkeypatch.setattr(objective, "quantize", broken_quantize)
    study = optuna.create_study(directions=["maximize", "maximize"])
    trial = study.ask()
    outcome = evaluate_into(study, trial, QuantConfig(operators=("MatMul",)), evaluator, {})
    assert outcome == "failed"
    frozen = study.trials[0]
    assert frozen.state == optuna.trial.TrialState.FAIL
    assert "onnxruntime could not load the model" in frozen.user_attrs["fail_reason"]
    assert "NoSuchOperator" in frozen.user_attrs["fail_reason"]


def test_nan_outputs_fail_the_trial(tiny_task):
    class NanSession:
        def run(self, _names, _inputs):
            return [np.full((2, 2), np.nan, dtype=np.float32)]

    with pytest.raises(TrialError, match="NaN"):
        tiny_task.outputs(NanSession(), tiny_task.eval_batches[:1])


def test_bootstrap_interval_covers_the_median_and_narrows_with_more_pairs():
    rng = np.random.default_rng(0)
    small = rng.normal(2.0, 0.1, 10)
    large = rng.normal(2.0, 0.1, 400)
    lo_s, hi_s = bootstrap_median(small)
    lo_l, hi_l = bootstrap_median(large)
    assert lo_s <= np.median(small) <= hi_s and lo_l <= np.median(large) <= hi_l
    assert (hi_l - lo_l) < (hi_s - lo_s)
    assert lo_l < 2.0 < hi_l
