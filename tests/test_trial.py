"""Real trials on the tiny BERT: real Optimum/onnxruntime quantization and timing."""

import hashlib
import math
from pathlib import Path

import numpy as np
import onnx
import optuna
import pytest

from search.config import QuantConfig
from search.errors import TrialError
from search.measure import TimingSettings
from search.objective import Evaluator
from search.runner import evaluate_into

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
    assert set(a["phase_seconds"]) == {"calibrate", "quantize", "accuracy", "load", "timing"}
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


def _op_types(path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def test_session_options_change_the_running_graph_not_the_file(
    evaluator, tiny_task, tmp_path, monkeypatch
):
    """onnxruntime fuses Add + LayerNormalization into SkipLayerNormalization when a session
    loads; a config that disables the fusion runs the unfused graph from the same file."""
    import search.objective as objective

    real_make_session = objective.make_session
    opened = []  # (model file, its sha256, its ops, the graph onnxruntime runs: its ops)

    def make_session(model_path, options=None):  # the sessions the trial opens, as built
        optimized = tmp_path / f"optimized-{len(opened)}.onnx"
        options.optimized_model_filepath = str(optimized)
        session = real_make_session(model_path, options)
        digest = hashlib.sha256(Path(model_path).read_bytes()).hexdigest()
        opened.append((Path(model_path), digest, _op_types(model_path), _op_types(optimized)))
        return session

    monkeypatch.setattr(objective, "make_session", make_session)
    runs = {}
    for fusions in ((), ("SkipLayerNormFusion",)):
        opened.clear()
        result = evaluator.evaluate(QuantConfig(operators=("MatMul",), disabled_fusions=fusions))
        quantized = [o for o in opened if o[0] != tiny_task.model_path]
        assert quantized and {o[1] for o in quantized} == {result.attrs["graph_sha256"]}
        runs[fusions] = result, quantized

    (fused, fused_q), (unfused, unfused_q) = runs.values()
    # the same quantized file either way: same bytes; the file keeps LayerNormalization
    assert fused.attrs["graph_sha256"] == unfused.attrs["graph_sha256"]
    for _, _, file_ops, _ in fused_q + unfused_q:
        assert "LayerNormalization" in file_ops and "SkipLayerNormalization" not in file_ops
    # ...but a different graph runs: fused by default, left unfused with the fusion disabled
    assert all("SkipLayerNormalization" in ops for *_, ops in fused_q)
    for *_, ops in unfused_q:
        assert "SkipLayerNormalization" not in ops and "LayerNormalization" in ops
    assert fused.attrs["graph_key"] != unfused.attrs["graph_key"]  # not the same measurement
    # fp32 is timed under the candidate's options too: the share of the speedup they bring
    assert fused.attrs["fp32_options_speedup"] == 1.0 and unfused.attrs["fp32_options_speedup"] > 0
    assert "no SkipLayerNormFusion" in unfused.attrs["description"]


def test_histogram_calibration_on_mask_operators_fails_with_a_reason(evaluator):
    with pytest.raises(TrialError, match="attention mask") as failed:
        evaluator.evaluate(
            QuantConfig(mode="static", operators=("MatMul", "Add"), calibration="entropy")
        )
    assert "cpu" in failed.value.attrs["worker"]  # a failure says which worker it failed on


def test_a_model_onnxruntime_cannot_load_is_a_failed_trial_and_the_search_goes_on(
    evaluator, monkeypatch
):
    import search.objective as objective

    def broken_quantize(config, fp32_model, out_dir, ranges=None, smoothed=None):
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
    assert "cpu" in frozen.user_attrs["worker"]


def test_nan_outputs_fail_the_trial(tiny_task):
    class NanSession:
        def run(self, _names, _inputs):
            return [np.full((2, 2), np.nan, dtype=np.float32)]

    with pytest.raises(TrialError, match="NaN"):
        tiny_task.outputs(NanSession(), tiny_task.eval_batches[:1])


def test_a_trial_whose_process_died_still_names_its_worker():
    from types import SimpleNamespace

    class Dying:  # what IsolatedEvaluator raises when the trial's process dies: no attributes
        timing = SimpleNamespace(threads=1)

        def evaluate(self, config, context=None):
            raise TrialError("the trial's process died: killed by SIGKILL")

    study = optuna.create_study(directions=["maximize", "maximize"])
    outcome = evaluate_into(study, study.ask(), QuantConfig(operators=("MatMul",)), Dying(), {})
    frozen = study.trials[0]
    assert outcome == "failed" and "SIGKILL" in frozen.user_attrs["fail_reason"]
    assert "cpu" in frozen.user_attrs["worker"] and frozen.user_attrs["worker"]["threads"] == 1
