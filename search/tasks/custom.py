"""Your own model and data: a Hugging Face model folder or an ONNX file, and a local data set.

A Hugging Face folder (a sequence classifier, or an encoder without a head such as a
sentence encoder's `BertModel`) is exported to ONNX once through Optimum and cached by content
hash under `$QSEARCH_HOME/models`. Data is read with the `datasets` library (CSV, JSON lines,
Parquet, or a folder saved by `save_to_disk`), split with a fixed seed into disjoint
evaluation and calibration parts, and labels are mapped to the model's `label2id`.

Only text classification (single sentences and sentence pairs) is searched with label
metrics; any other ONNX model with a BERT-style tokenizer can be searched without labels
through the `cosine` fidelity metric. Generation, token classification and vision models are
refused: their outputs need task-specific metrics and inputs this tool does not build.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search.errors import TaskError, first_line
from search.files import temp_dir
from search.metrics import LABEL_METRICS
from search.tasks.base import TextClassificationTask
from search.tasks.default import qsearch_home
from search.tasks.outputs import is_logits, model_outputs

DATA_SUFFIXES = {".csv": "csv", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
TEXT_GUESSES = ("text", "sentence", "sentence1", "review", "content")
PAIR_GUESSES = ("text_pair", "sentence2")
LABEL_GUESSES = ("label", "labels")


@dataclass(frozen=True)
class ModelFiles:
    onnx: Path
    tokenizer_dir: Path
    id2label: dict[int, str] | None


@dataclass(frozen=True)
class DataSettings:
    path: Path
    text_column: str | None = None
    text_pair_column: str | None = None
    label_column: str | None = None
    split: str | None = None
    eval_size: int = 1000
    calibration_size: int = 256
    seed: int = 0


def _read_config(directory: Path) -> dict[str, Any] | None:
    file = directory / "config.json"
    return json.loads(file.read_text()) if file.exists() else None


def _id2label(config: dict[str, Any] | None) -> dict[int, str] | None:
    if not config or "id2label" not in config:
        return None
    return {int(k): str(v) for k, v in config["id2label"].items()}


def _has_tokenizer(directory: Path) -> bool:
    return any((directory / f).exists() for f in ("tokenizer.json", "vocab.txt"))


def optimum_class(architectures: list[str]) -> str | None:
    """The Optimum ORTModel class that exports and loads a folder of these architectures: a
    sequence classifier, or an encoder without a head (`BertModel`, `MPNetModel`, ...: a
    sentence encoder, searched by the `cosine` of its pooled outputs); None for the rest."""
    if any(a.endswith("ForSequenceClassification") for a in architectures):
        return "ORTModelForSequenceClassification"
    if any(a.endswith("Model") and "For" not in a for a in architectures):
        return "ORTModelForFeatureExtraction"
    return None


def _export_hf(directory: Path, config: dict[str, Any]) -> Path:
    """Export a Hugging Face classifier or encoder folder to ONNX once, cached by content."""
    architectures = config.get("architectures") or []
    loader = optimum_class(architectures)
    if loader is None:
        raise TaskError(
            f"--model `{directory}` must be a sequence classifier (architectures ending in "
            f"ForSequenceClassification) or an encoder without a head (such as BertModel), "
            f"but it is {architectures or 'unspecified'}; export other models to ONNX "
            f"yourself and search them with --metric cosine"
        )
    weights = sorted(directory.glob("*.safetensors")) + sorted(directory.glob("*.bin"))
    digest = hashlib.sha256((directory / "config.json").read_bytes())
    for file in weights:
        digest.update(file.name.encode())
        digest.update(str(file.stat().st_size).encode())
        with open(file, "rb") as f:
            hashlib.file_digest(f, lambda: digest)  # its bytes, into the same running digest
    target = qsearch_home() / "models" / digest.hexdigest()[:16]
    if (target / "model.onnx").exists():
        return target
    import optimum.onnxruntime
    from transformers import AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    work = temp_dir(target.parent, prefix=".export-")
    try:
        model_class = getattr(optimum.onnxruntime, loader)
        with warnings.catch_warnings():
            # the tracer's warnings about constants in transformers' mask code (see
            # search.tasks.export): the exported axes cover batch and sequence length
            warnings.simplefilter("ignore")
            model = model_class.from_pretrained(str(directory), export=True)
        model.save_pretrained(work)
        AutoTokenizer.from_pretrained(str(directory)).save_pretrained(work)
        if target.exists():
            shutil.rmtree(target)
        work.rename(target)
    except TaskError:
        raise
    except Exception as exc:  # noqa: BLE001 - export errors are the user's model's
        raise TaskError(f"--model `{directory}` could not be exported to ONNX: {exc}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def resolve_model(path: Path, tokenizer: Path | None = None) -> ModelFiles:
    """An ONNX model file and its tokenizer folder, from what the user pointed at."""
    path = Path(path)
    if not path.exists():
        raise TaskError(
            f"--model `{path}` must be an ONNX file or a model folder, but it does not exist"
        )
    if path.is_dir():
        config = _read_config(path)
        if (path / "model.onnx").exists():
            onnx_file, folder = path / "model.onnx", path
        elif config is not None and (
            any(path.glob("*.safetensors")) or any(path.glob("pytorch_model*.bin"))
        ):
            folder = _export_hf(path, config)
            onnx_file = folder / "model.onnx"
        else:
            raise TaskError(
                f"--model `{path}` must hold model.onnx, or config.json with safetensors or "
                f"PyTorch weights, but it holds {sorted(p.name for p in path.iterdir())[:10]}"
            )
    elif path.suffix == ".onnx":
        onnx_file, folder, config = path, path.parent, _read_config(path.parent)
    else:
        raise TaskError(f"--model must be an .onnx file or a model folder, but got `{path}`")
    tokenizer_dir = Path(tokenizer) if tokenizer else folder
    if not _has_tokenizer(tokenizer_dir):
        raise TaskError(
            f"the model needs a Hugging Face tokenizer folder (tokenizer.json or vocab.txt); "
            f"none in `{tokenizer_dir}`: pass --tokenizer DIR"
        )
    return ModelFiles(onnx_file, tokenizer_dir, _id2label(config))


def load_rows(settings: DataSettings):  # -> datasets.Dataset
    """The chosen split of a local data set, read with `datasets`."""
    import datasets

    path = Path(settings.path)
    if not path.exists():
        raise TaskError(f"--data `{path}` must exist, but it does not")
    datasets.disable_progress_bars()
    try:
        if path.is_dir():
            loaded = datasets.load_from_disk(str(path))
        elif path.suffix.lower() in DATA_SUFFIXES:
            builder = DATA_SUFFIXES[path.suffix.lower()]
            cache = qsearch_home() / "datasets"
            loaded = datasets.load_dataset(builder, data_files=str(path), cache_dir=str(cache))
        else:
            raise TaskError(
                f"--data must be a .csv, .jsonl, .json or .parquet file or a folder saved by "
                f"datasets' save_to_disk, but got `{path}`"
            )
    except TaskError:
        raise
    except Exception as exc:  # noqa: BLE001 - parse errors are the user's file's
        if "corresponds to no data" in str(exc):  # datasets' words for a file without rows
            raise TaskError(f"--data `{path}` must hold examples, but it has no rows") from None
        raise TaskError(f"--data `{path}` could not be read: {first_line(exc)}") from None
    if isinstance(loaded, datasets.DatasetDict):
        names = list(loaded)
        split = settings.split or next(
            (s for s in ("test", "validation", "train") if s in loaded), names[0]
        )
        if split not in loaded:
            raise TaskError(f"--split must be one of {names}, but got {split!r}")
        rows = loaded[split]
    else:
        if settings.split not in (None, "train"):
            raise TaskError(
                f"--split must be 'train' for a single data set, but got {settings.split!r}"
            )
        rows = loaded
    if len(rows) == 0:
        raise TaskError(f"--data `{path}`: the split must hold examples, but it is empty")
    return rows


def _column(rows, given: str | None, guesses: tuple[str, ...], option: str, required: bool):
    columns = list(rows.column_names)
    if given is not None:
        if given not in columns:
            raise TaskError(
                f"{option} must name a column of the data ({', '.join(columns)}), but got {given!r}"
            )
        return given
    found = next((c for c in guesses if c in columns), None)
    if found is None and required:
        raise TaskError(
            f"{option} is needed: the data has no column named "
            f"{' or '.join(guesses)} (its columns: {', '.join(columns)})"
        )
    return found


def map_labels(values: list, id2label: dict[int, str] | None) -> list[int]:
    """Map string or int labels to the model's class ids, refusing unknown labels."""
    if id2label is None:
        bad = [v for v in values if not isinstance(v, int) or isinstance(v, bool) or v < 0]
        if bad:
            raise TaskError(
                f"labels must be class ids (ints >= 0) when the model has no id2label, but got "
                f"{bad[0]!r}"
            )
        return [int(v) for v in values]
    label2id = {name.lower(): i for i, name in id2label.items()}
    out = []
    for value in values:
        if isinstance(value, int) and not isinstance(value, bool) and value in id2label:
            out.append(value)
        elif isinstance(value, str) and value.lower() in label2id:
            out.append(label2id[value.lower()])
        elif isinstance(value, str) and value.isdigit() and int(value) in id2label:
            out.append(int(value))
        else:
            allowed = ", ".join(f"{i}={n}" for i, n in sorted(id2label.items()))
            raise TaskError(f"label {value!r} is not one the model knows ({allowed})")
    return out


def unlabelled_metric(model: Path, task_options: dict[str, Any]) -> str:
    """Without labels: `agreement` (fp32's classes) when the metric reads classification
    logits, else `cosine`, the only fidelity metric that means anything for an encoder's
    embeddings or hidden states."""
    requested = task_options.get("output")
    declared = [o for o in model_outputs(model) if o.dims is None or len(o.dims) == 2]
    names = [o.name for o in declared if requested in (None, o.name)]
    return "agreement" if any(is_logits(n) for n in names) else "cosine"


def build_task(
    model: Path,
    data: DataSettings,
    tokenizer: Path | None = None,
    metric: str | None = None,
    name: str | None = None,
    **task_options: Any,
) -> TextClassificationTask:
    """The task of a user's model and data; `task_options` are TextClassificationTask's
    serving shape and output fields (batch_size, max_length, padding, output, pooling)."""
    files = resolve_model(model, tokenizer)
    rows = load_rows(data)
    text = _column(rows, data.text_column, TEXT_GUESSES, "--text-column", True)
    pair = _column(rows, data.text_pair_column, PAIR_GUESSES, "--text-pair-column", False)
    label = _column(rows, data.label_column, LABEL_GUESSES, "--label-column", False)
    metric = metric or ("accuracy" if label else unlabelled_metric(files.onnx, task_options))
    if metric in LABEL_METRICS and label is None:
        raise TaskError(
            f"metric {metric!r} needs labels: name the label column with --label-column, or "
            f"search without labels with --metric agreement (or cosine)"
        )
    if data.eval_size < 1 or data.calibration_size < 1:
        raise TaskError("--eval-size and --calibration-size must be at least 1")
    n = len(rows)
    if n < 2:
        raise TaskError(
            f"--data must hold at least 2 examples (evaluation and calibration), but it holds {n}"
        )
    shuffled = rows.shuffle(seed=data.seed)
    calibration = min(data.calibration_size, max(1, n // 4))
    evaluation = min(data.eval_size, n - calibration)
    eval_rows = shuffled.select(range(evaluation))
    calib_rows = shuffled.select(range(evaluation, evaluation + calibration))
    labels = map_labels(list(eval_rows[label]), files.id2label) if label else None
    return TextClassificationTask(
        name=name or Path(model).stem.replace(".", "-"),
        model_path=files.onnx,
        tokenizer_dir=files.tokenizer_dir,
        eval_texts=[str(t) for t in eval_rows[text]],
        eval_labels=labels,
        calibration_texts=[str(t) for t in calib_rows[text]],
        eval_pairs=[str(t) for t in eval_rows[pair]] if pair else None,
        calibration_pairs=[str(t) for t in calib_rows[pair]] if pair else None,
        metric=metric,
        **task_options,
        metadata={
            "data": str(data.path),
            "text_column": text,
            "text_pair_column": pair,
            "label_column": label,
            "seed": data.seed,
        },
    )
