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
from search.metrics import LABEL_METRICS, METRICS, score


@dataclass(frozen=True)
class Batch:
    """Model inputs (name -> int64 array) and which evaluation examples they hold."""

    inputs: dict[str, np.ndarray]
    index: np.ndarray

    def __len__(self) -> int:
        return int(self.index.shape[0])


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()[:16]


def look_bounds(total: int, looks: Sequence[float]) -> list[int]:
    """Cumulative example counts at each look (increasing, distinct, the last = total)."""
    bounds = sorted({max(1, min(total, round(total * share))) for share in looks} | {total})
    return bounds


def model_operators(model_path: Path) -> list[str]:
    """Operator types of the model's main graph (what a space's operators are checked against)."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    return sorted({node.op_type for node in model.graph.node})


@dataclass
class TextClassificationTask:
    """Sentence (or sentence-pair) classification on an ONNX model with a Hugging Face
    tokenizer directory, scored by a label metric or by fidelity to the fp32 model.

    Evaluation batches are padded to their longest example (as a served model would be).
    Calibration rows are packed: whole examples concatenated to exactly `calibration_length`
    tokens with no padding, because histogram calibrators (entropy, percentile) cannot stack
    ragged rows and fail on the attention mask's -3.4e38 padding values.
    """

    name: str
    model_path: Path
    tokenizer_dir: Path
    eval_texts: Sequence[str]
    eval_labels: Sequence[int] | None
    calibration_texts: Sequence[str]
    eval_pairs: Sequence[str] | None = None
    calibration_pairs: Sequence[str] | None = None
    metric: str = "accuracy"
    batch_size: int = 32
    max_length: int = 128
    calibration_length: int = 64
    timing_batches_count: int = 8
    # Cumulative shares of the evaluation set scored before each early-stopping look.
    eval_looks: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0)
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.model_path = Path(self.model_path)
        self.tokenizer_dir = Path(self.tokenizer_dir)
        if not self.model_path.is_file():
            raise TaskError(f"model `{self.model_path}` must be an existing .onnx file")
        if not self.eval_texts:
            raise TaskError("evaluation data must hold at least one example, but it is empty")
        if self.eval_labels is not None and len(self.eval_labels) != len(self.eval_texts):
            raise TaskError(
                f"evaluation data must hold one label per text, but got "
                f"{len(self.eval_texts)} texts and {len(self.eval_labels)} labels"
            )
        if not self.calibration_texts:
            raise TaskError("calibration data must hold at least one text, but got none")
        if self.metric not in METRICS:
            raise TaskError(
                f"--metric must be one of {', '.join(METRICS)}, but got {self.metric!r}"
            )
        if not self.eval_looks or not all(0 < share <= 1 for share in self.eval_looks):
            raise TaskError(
                f"eval_looks must be shares of the evaluation set in (0, 1], but got "
                f"{self.eval_looks}"
            )
        if self.metric in LABEL_METRICS and self.eval_labels is None:
            raise TaskError(
                f"metric {self.metric!r} needs labels, but the data has none; name the label "
                f"column, or use a label-free metric (agreement, cosine)"
            )

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

    def _encode(
        self, texts: Sequence[str], pairs: Sequence[str] | None = None, **kwargs: Any
    ) -> dict[str, np.ndarray]:
        args = (list(texts),) if pairs is None else (list(texts), list(pairs))
        encoded = self.tokenizer(*args, return_tensors="np", **kwargs)
        missing = [n for n in self.input_names if n not in encoded]
        if missing:
            raise TaskError(
                f"the tokenizer must produce the model's inputs {self.input_names}, "
                f"but it does not produce {missing}"
            )
        return {name: encoded[name].astype(np.int64) for name in self.input_names}

    def _batches(self, order: Sequence[int]) -> list[Batch]:
        batches = []
        for start in range(0, len(order), self.batch_size):
            idx = np.asarray(order[start : start + self.batch_size], dtype=np.int64)
            texts = [self.eval_texts[i] for i in idx]
            pairs = None if self.eval_pairs is None else [self.eval_pairs[i] for i in idx]
            inputs = self._encode(
                texts, pairs, padding=True, truncation=True, max_length=self.max_length
            )
            batches.append(Batch(inputs, idx))
        return batches

    @cached_property
    def eval_slices(self) -> list[list[Batch]]:
        """Every evaluation example once, in nested growing slices (`eval_looks`) of one
        seeded random permutation, so each prefix of slices is a uniform random sample (never
        the shortest sentences first) that early stopping can draw conclusions from. Within a
        slice, batches hold examples of similar length: far less padding is computed."""
        total = len(self.eval_texts)
        order = np.random.default_rng(0).permutation(total)
        bounds = look_bounds(total, self.eval_looks)
        slices = []
        for start, stop in zip([0, *bounds[:-1]], bounds, strict=True):
            part = order[start:stop]
            lengths = [len(self.eval_texts[i]) for i in part]
            part = part[np.argsort(lengths, kind="stable")]
            slices.append(self._batches(part.tolist()))
        return slices

    @cached_property
    def eval_batches(self) -> list[Batch]:
        """All evaluation batches, slice after slice: `outputs` rows come in this order."""
        return [batch for part in self.eval_slices for batch in part]

    @cached_property
    def eval_references(self) -> np.ndarray | None:
        """Labels in the order `outputs` returns rows for `eval_batches`."""
        if self.eval_labels is None:
            return None
        labels = np.asarray(self.eval_labels, dtype=np.int64)
        return labels[np.concatenate([b.index for b in self.eval_batches])]

    @cached_property
    def timing_batches(self) -> list[Batch]:
        """Real batches in the data's own order (mixed lengths, as served) for timing."""
        count = min(len(self.eval_texts), self.batch_size * self.timing_batches_count)
        full = [b for b in self._batches(range(count)) if len(b) == self.batch_size]
        return full or self._batches(range(count))

    @cached_property
    def latency_batches(self) -> list[Batch]:
        """Single real examples (batch size 1, no padding) for latency timing."""
        count = min(len(self.eval_texts), 8 * self.timing_batches_count)
        saved, self.batch_size = self.batch_size, 1
        try:
            return self._batches(range(count))
        finally:
            self.batch_size = saved

    @cached_property
    def calibration_rows(self) -> list[dict[str, list[int]]]:
        """Packed fixed-length rows of real sentences, attention mask all ones."""
        tok = self.tokenizer
        cls_id, sep_id = tok.cls_token_id, tok.sep_token_id
        if cls_id is None or sep_id is None:
            raise TaskError(
                f"the tokenizer in `{self.tokenizer_dir}` must define CLS and SEP tokens "
                f"(a BERT-style tokenizer), but it does not"
            )
        first = tok(list(self.calibration_texts), add_special_tokens=False)["input_ids"]
        second = (
            tok(list(self.calibration_pairs), add_special_tokens=False)["input_ids"]
            if self.calibration_pairs is not None
            else [[] for _ in first]
        )
        stream: list[tuple[int, int]] = []  # (token, segment) of every example in turn
        for a, b in zip(first, second, strict=True):
            stream += [(t, 0) for t in [*a, sep_id]]
            if b:
                stream += [(t, 1) for t in [*b, sep_id]]
        body = self.calibration_length - 2
        if len(stream) < body:  # fewer tokens than one row: repeat what there is
            stream = (stream * (body // max(1, len(stream)) + 1))[:body]
        rows = [stream[i : i + body] for i in range(0, len(stream) - body + 1, body)]
        out = []
        for row in rows:
            full = {
                "input_ids": [cls_id, *(t for t, _ in row), sep_id],
                "attention_mask": [1] * (len(row) + 2),
                "token_type_ids": [0, *(g for _, g in row), row[-1][1]],
            }
            out.append({k: v for k, v in full.items() if k in self.input_names})
        return out

    def calibration_dataset(self):  # -> datasets.Dataset
        from datasets import Dataset

        rows = self.calibration_rows
        return Dataset.from_dict({k: [r[k] for r in rows] for k in rows[0]})

    def outputs(self, session, batches: Sequence[Batch] | None = None) -> np.ndarray:
        """The model's first output for every example of `batches` (default: evaluation),
        in batch order; NaN or infinite outputs fail the trial."""
        rows = []
        for batch in batches if batches is not None else self.eval_batches:
            out = session.run(None, batch.inputs)[0]
            if not np.all(np.isfinite(out)):
                raise TrialError("the model produced NaN or infinite outputs")
            rows.append(out)
        return np.concatenate(rows)

    def score(self, outputs: np.ndarray, fp32_outputs: np.ndarray | None = None) -> float:
        """The task's metric; fidelity metrics compare with the fp32 model's outputs."""
        return score(self.metric, outputs, self.eval_references, fp32_outputs)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": str(self.model_path),
            "model_sha256": self.model_digest,
            "eval_examples": len(self.eval_texts),
            "calibration_texts": len(self.calibration_texts),
            "batch_size": self.batch_size,
            "metric": self.metric,
            "text_pairs": self.eval_pairs is not None,
            **self.metadata,
        }
