"""The task a search optimizes for: an fp32 ONNX model, tokenized data and a metric.

Everything downstream (quantize, measure, objective) sees only this interface, so the default
MiniLM sentiment task and a user's own model and data plug in the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from search.errors import QsearchError, TaskError, TrialError, first_line
from search.metrics import LABEL_METRICS, METRICS, score
from search.model_files import model_digest
from search.tasks.inputs import InputInfo, check_inputs, fill, model_inputs
from search.tasks.outputs import (
    OutputChoice,
    OutputInfo,
    check_output_name,
    check_serving_shape,
    choose_output,
    described,
    model_outputs,
    outputs_text,
    run_fp32,
)


@dataclass(frozen=True)
class Batch:
    """Model inputs (name -> integer array) and which evaluation examples they hold; `mask`
    is the tokenizer's attention mask, kept even for a model that takes none, because a
    sequence output is pooled over it."""

    inputs: dict[str, np.ndarray]
    index: np.ndarray
    mask: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.index.shape[0])


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

    Batches are the serving shape: `batch_size` examples, truncated to `max_length` tokens,
    padded to the longest in the batch (`padding="longest"`) or to `max_length`; latency is
    timed on batches of `latency_batch_size`. Calibration rows are packed: whole examples
    concatenated to exactly `calibration_length` tokens (at most `max_length`; exactly it with
    fixed-length padding) with no padding, because histogram calibrators (entropy,
    percentile) cannot stack ragged rows and fail on the attention mask's -3.4e38 padding.

    The metric reads one output (`output`, or the default of `choose_output`), a sequence
    output pooled by `pooling`; `check()` prepares everything a search needs and turns any
    failure into one `TaskError` before a trial runs.
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
    padding: str = "longest"
    latency_batch_size: int = 1
    output: str | None = None
    pooling: str | None = None
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
        for size in (self.batch_size, self.latency_batch_size):
            check_serving_shape(size, self.max_length, self.padding, self.pooling)
        self.calibration_length = (
            self.max_length
            if self.padding == "max_length"
            else min(self.calibration_length, self.max_length)
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
    def input_infos(self) -> list[InputInfo]:
        """The model's inputs, checked against what can be filled at this serving shape."""
        infos = model_inputs(self.model_path)
        check_inputs(infos, self.batch_size, self.max_length, self.padding)
        return infos

    @cached_property
    def input_names(self) -> list[str]:
        return [i.name for i in self.input_infos]

    @cached_property
    def output_infos(self) -> list[OutputInfo]:
        """The model's outputs as declared; `--output` is checked against them at once."""
        infos = model_outputs(self.model_path)
        check_output_name(infos, self.output)
        return infos

    @cached_property
    def probed_outputs(self) -> list[OutputInfo]:
        """The outputs classified by one fp32 run on the longest evaluation batch (the one
        most likely to fail: positions past what the model was exported for)."""
        batch = max(self.eval_batches, key=lambda b: b.inputs["input_ids"].shape[1])
        shape = (
            f"--batch-size {self.batch_size}, --max-length {self.max_length}, "
            f"--padding {self.padding}"
        )
        return run_fp32(self.model_path, self.output_infos, batch.inputs, shape)

    @cached_property
    def reading(self) -> OutputChoice:
        """The output the metric reads and its pooling; a label or agreement metric needs
        classes, so it refuses a pooled sequence output."""
        choice = choose_output(self.probed_outputs, self.output, self.pooling)
        if self.metric != "cosine" and choice.pooling != "none":
            raise TaskError(
                f"metric {self.metric!r} compares classes (the argmax of a [batch, classes] "
                f"output), but the metric would read {choice}; use --metric cosine, or name "
                f"a classification output with --output (outputs: "
                f"{outputs_text(self.probed_outputs)})"
            )
        return choice

    def check(self) -> OutputChoice:
        """Prepare everything a search reads (inputs, tokenized batches, calibration rows,
        the output the metric reads) now, so that any failure is one `TaskError` naming
        what went wrong before a study or trial exists."""
        stages = [
            ("reading the model's inputs", lambda: self.input_infos),
            ("reading the model's outputs", lambda: self.output_infos),
            ("tokenizing the evaluation data", lambda: self.eval_batches),
            ("tokenizing the timing batches", lambda: self.timing_batches),
            ("packing the calibration rows", lambda: self.calibration_rows),
            ("choosing the output the metric reads", lambda: self.reading),
        ]
        for what, step in stages:
            try:
                step()
            except QsearchError:
                raise
            except Exception as exc:  # noqa: BLE001 - every library's error, in one line
                raise TaskError(
                    f"the task must be prepared before searching, but {what} failed: "
                    f"{first_line(exc)}"
                ) from None
        return self.reading

    @cached_property
    def operators(self) -> list[str]:
        return model_operators(self.model_path)

    @cached_property
    def model_digest(self) -> str:
        return model_digest(self.model_path)

    def _encode(
        self, texts: Sequence[str], pairs: Sequence[str] | None = None, **kwargs: Any
    ) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """(the model's inputs, the tokenizer's attention mask) of `texts`."""
        args = (list(texts),) if pairs is None else (list(texts), list(pairs))
        encoded = self.tokenizer(*args, return_tensors="np", **kwargs)
        mask = encoded.get("attention_mask")
        return fill(encoded, self.input_infos), None if mask is None else mask.astype(np.int64)

    def _batches(self, order: Sequence[int]) -> list[Batch]:
        batches = []
        for start in range(0, len(order), self.batch_size):
            idx = np.asarray(order[start : start + self.batch_size], dtype=np.int64)
            texts = [self.eval_texts[i] for i in idx]
            pairs = None if self.eval_pairs is None else [self.eval_pairs[i] for i in idx]
            inputs, mask = self._encode(
                texts,
                pairs,
                padding=True if self.padding == "longest" else "max_length",
                truncation=True,
                max_length=self.max_length,
            )
            batches.append(Batch(inputs, idx, mask))
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
        """Real batches of `latency_batch_size` (default 1: single examples) for latency
        timing, truncated and padded like every other batch."""
        count = min(len(self.eval_texts), 8 * self.latency_batch_size * self.timing_batches_count)
        saved, self.batch_size = self.batch_size, self.latency_batch_size
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
                "position_ids": list(range(len(row) + 2)),
            }
            out.append({k: v for k, v in full.items() if k in self.input_names})
        return out

    def calibration_dataset(self):  # -> datasets.Dataset
        from datasets import Dataset

        rows = self.calibration_rows
        return Dataset.from_dict({k: [r[k] for r in rows] for k in rows[0]})

    def outputs(self, session, batches: Sequence[Batch] | None = None) -> np.ndarray:
        """One row per example of `batches` (default: evaluation), in batch order, of the
        output the metric reads (`reading`), a sequence output pooled over each batch's
        attention mask so rows of batches of different lengths stack; NaN or infinite
        outputs fail the trial."""
        reading = self.reading
        rows = []
        for batch in batches if batches is not None else self.eval_batches:
            out = session.run([reading.name], batch.inputs)[0]
            if not np.all(np.isfinite(out)):
                raise TrialError("the model produced NaN or infinite outputs")
            rows.append(reading.reduce(out, batch.mask))
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
            "max_length": self.max_length,
            "padding": self.padding,
            "latency_batch_size": self.latency_batch_size,
            "metric": self.metric,
            **described(self.reading, self.probed_outputs),
            "text_pairs": self.eval_pairs is not None,
            **self.metadata,
        }
