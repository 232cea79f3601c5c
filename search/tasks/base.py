"""The task a search optimizes for: an fp32 ONNX model, tokenized data and a metric.

Everything downstream (quantize, measure, objective) sees only this interface, so the default
MiniLM sentiment task and a user's own model and data plug in the same way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from search.errors import TaskError, TrialError


@dataclass(frozen=True)
class Batch:
    """Model inputs (name -> int64 array) and the references for them."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()[:16]


def model_operators(model_path: Path) -> list[str]:
    """Operator types of the model's main graph (what a space's operators are checked against)."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    return sorted({node.op_type for node in model.graph.node})


@dataclass
class TextClassificationTask:
    """Sentence classification on an ONNX model with a Hugging Face tokenizer directory.

    Evaluation batches are padded to their longest sentence (as a served model would be).
    Calibration rows are packed: whole sentences concatenated to exactly `calibration_length`
    tokens with no padding, because histogram calibrators (entropy, percentile) cannot stack
    ragged rows and fail on the attention mask's -3.4e38 padding values.
    """

    name: str
    model_path: Path
    tokenizer_dir: Path
    eval_texts: Sequence[str]
    eval_labels: Sequence[int]
    calibration_texts: Sequence[str]
    batch_size: int = 32
    max_length: int = 128
    calibration_length: int = 64
    timing_batches_count: int = 8
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.model_path = Path(self.model_path)
        self.tokenizer_dir = Path(self.tokenizer_dir)
        if not self.model_path.is_file():
            raise TaskError(f"model `{self.model_path}` must be an existing .onnx file")
        if len(self.eval_texts) != len(self.eval_labels) or not self.eval_texts:
            raise TaskError(
                f"evaluation data must hold one label per text and at least one text, but got "
                f"{len(self.eval_texts)} texts and {len(self.eval_labels)} labels"
            )
        if not self.calibration_texts:
            raise TaskError("calibration data must hold at least one text, but got none")

    @cached_property
    def tokenizer(self):
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(str(self.tokenizer_dir))
        except (OSError, ValueError) as exc:
            raise TaskError(
                f"tokenizer directory `{self.tokenizer_dir}` must hold a Hugging Face tokenizer "
                f"(tokenizer.json or vocab.txt), but loading failed: {exc}"
            ) from None

    @cached_property
    def input_names(self) -> list[str]:
        import onnx

        model = onnx.load(str(self.model_path), load_external_data=False)
        initializers = {i.name for i in model.graph.initializer}
        return [i.name for i in model.graph.input if i.name not in initializers]

    @cached_property
    def operators(self) -> list[str]:
        return model_operators(self.model_path)

    @cached_property
    def model_digest(self) -> str:
        return file_digest(self.model_path)

    def _encode(self, texts: Sequence[str], **kwargs: Any) -> dict[str, np.ndarray]:
        encoded = self.tokenizer(list(texts), return_tensors="np", **kwargs)
        missing = [n for n in self.input_names if n not in encoded]
        if missing:
            raise TaskError(
                f"the tokenizer must produce the model's inputs {self.input_names}, "
                f"but it does not produce {missing}"
            )
        return {name: encoded[name].astype(np.int64) for name in self.input_names}

    def _batches(self, order: Sequence[int]) -> list[Batch]:
        labels = np.asarray(self.eval_labels, dtype=np.int64)
        batches = []
        for start in range(0, len(order), self.batch_size):
            idx = list(order[start : start + self.batch_size])
            texts = [self.eval_texts[i] for i in idx]
            inputs = self._encode(texts, padding=True, truncation=True, max_length=self.max_length)
            batches.append(Batch(inputs, labels[idx]))
        return batches

    @cached_property
    def eval_batches(self) -> list[Batch]:
        """Every evaluation example once, in batches of similar length: the predictions are
        the same as in any order, and far less padding is computed."""
        order = np.argsort([len(t) for t in self.eval_texts], kind="stable")
        return self._batches(order.tolist())

    @cached_property
    def eval_references(self) -> np.ndarray:
        """Labels in the order `predict` returns predictions for `eval_batches`."""
        return np.concatenate([b.labels for b in self.eval_batches])

    @cached_property
    def timing_batches(self) -> list[Batch]:
        """Real batches in the data's own order (mixed lengths, as served) for timing."""
        count = min(len(self.eval_texts), self.batch_size * self.timing_batches_count)
        full = [b for b in self._batches(range(count)) if len(b) == self.batch_size]
        return full or self._batches(range(count))

    @cached_property
    def calibration_rows(self) -> list[dict[str, list[int]]]:
        """Packed fixed-length rows of real sentences, attention mask all ones."""
        tok = self.tokenizer
        ids = tok(list(self.calibration_texts), add_special_tokens=False)["input_ids"]
        cls_id, sep_id = tok.cls_token_id, tok.sep_token_id
        body = self.calibration_length - 2
        rows: list[list[int]] = []
        current: list[int] = []
        for sentence in ids:
            for token in [*sentence, sep_id]:
                current.append(token)
                if len(current) == body:
                    rows.append([cls_id, *current, sep_id])
                    current = []
        if not rows:  # fewer tokens than one row: pad by repeating what there is
            stream = [t for s in ids for t in [*s, sep_id]] or [sep_id]
            rows.append([cls_id, *(stream * body)[:body], sep_id])
        out = []
        for row in rows:
            full = {
                "input_ids": row,
                "attention_mask": [1] * len(row),
                "token_type_ids": [0] * len(row),
            }
            out.append({k: v for k, v in full.items() if k in self.input_names})
        return out

    def calibration_dataset(self):  # -> datasets.Dataset
        from datasets import Dataset

        rows = self.calibration_rows
        return Dataset.from_dict({k: [r[k] for r in rows] for k in rows[0]})

    def predict(self, session, batches: Sequence[Batch] | None = None) -> np.ndarray:
        """Predicted class per evaluation example; NaN or inf outputs fail the trial."""
        predictions = []
        for batch in batches if batches is not None else self.eval_batches:
            logits = session.run(None, batch.inputs)[0]
            if not np.all(np.isfinite(logits)):
                raise TrialError("the model produced NaN or infinite outputs")
            predictions.append(np.argmax(logits, axis=-1))
        return np.concatenate(predictions)

    def score(self, predictions: np.ndarray, references: np.ndarray | None = None) -> float:
        refs = self.eval_references if references is None else np.asarray(references)
        return float(np.mean(np.asarray(predictions) == refs))

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": str(self.model_path),
            "model_sha256": self.model_digest,
            "eval_examples": len(self.eval_texts),
            "calibration_texts": len(self.calibration_texts),
            "batch_size": self.batch_size,
            "metric": "accuracy",
            **self.metadata,
        }
