"""Which of a model's outputs the metric reads, and how a sequence output becomes one row per
example.

A model exported by someone else may have several outputs with exporter-made names
(`onnx::Gather_317`, `320`), one of them the `[batch, sequence, hidden]` hidden state. Rows of
a sequence output cannot be concatenated across batches padded to different lengths, and
padded positions are not the model's answer, so a sequence output is pooled over the
attention mask (mean, or the first token) into one `[hidden]` row per example before any
metric sees it. The choice is made once, from the graph's declared outputs refined by one real
fp32 run (`probe`), so an output without declared shapes is still classified by what it is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from search.errors import TaskError, first_line
from search.tasks.inputs import PADDINGS, dims_of, load_graph

# How a sequence output becomes one row per example: "mean" over the attention mask's valid
# tokens, "cls" the first token; "none" reads a [batch, features] output as it is.
POOLINGS = ("mean", "cls")


def check_serving_shape(
    batch_size: int | None, max_length: int, padding: str, pooling: str | None
) -> None:
    """The serving-shape options, checked once for the settings and the task alike."""
    if batch_size is not None and batch_size < 1:
        raise TaskError(f"--batch-size must be at least 1, but got {batch_size}")
    if max_length < 2:
        raise TaskError(
            f"--max-length must be at least 2 (the CLS and SEP tokens), but got {max_length}"
        )
    if padding not in PADDINGS:
        raise TaskError(f"--padding must be one of {', '.join(PADDINGS)}, but got {padding!r}")
    if pooling is not None and pooling not in POOLINGS:
        raise TaskError(f"--pooling must be one of {', '.join(POOLINGS)}, but got {pooling!r}")


FEATURES, SEQUENCE = "[batch, features]", "[batch, sequence, hidden]"


@dataclass(frozen=True)
class OutputInfo:
    """One graph output: its name, element type and declared dims (None where unknown);
    `kind` is FEATURES, SEQUENCE, or None when it cannot be read as either."""

    name: str
    dtype: str
    dims: tuple[int | str | None, ...] | None
    kind: str | None = None
    why_not: str = ""

    @property
    def shape_text(self) -> str:
        """Fixed dims as numbers; the batch and sequence axes by what they are (exporters
        name them `LayerNormalizationonnx::Gather_317_dim_0` and the like)."""
        if self.dims is None:
            return "[?]"
        roles = {} if self.why_not.startswith("no [batch") else {0: "batch"}
        if self.kind == SEQUENCE or (self.kind is None and roles and len(self.dims) == 3):
            roles[1] = "sequence"
        return "[" + ", ".join(_dim(d, roles.get(i)) for i, d in enumerate(self.dims)) + "]"

    def __str__(self) -> str:
        return f"`{self.name}` {self.dtype} {self.shape_text}"


def _dim(value: int | str | None, role: str | None) -> str:
    if isinstance(value, int) and value > 0:
        return str(value)
    return role or ("?" if value is None else str(value))


@dataclass(frozen=True)
class OutputChoice:
    """The output the metric reads, its pooling ("none" for a features output) and why it
    was chosen; `reduce` turns one batch's output into rows that stack across batches."""

    name: str
    pooling: str
    shape: str
    why: str

    def describe(self) -> dict[str, str]:
        return {"output": self.name, "pooling": self.pooling, "output_shape": self.shape}

    def __str__(self) -> str:
        read = "as it is" if self.pooling == "none" else _POOLING_TEXT[self.pooling]
        return f"`{self.name}` {self.shape}, {read} ({self.why})"

    def reduce(self, out: np.ndarray, attention_mask: np.ndarray | None) -> np.ndarray:
        """One row per example: a features output as it is (flattened past the batch axis),
        a sequence output pooled over the valid tokens of `attention_mask`."""
        out = np.asarray(out)
        if self.pooling == "none":
            return out.reshape(len(out), -1)
        if out.ndim != 3 or attention_mask is None or out.shape[:2] != attention_mask.shape:
            raise TaskError(
                f"output `{self.name}` must be {SEQUENCE} to be pooled, but a batch of shape "
                f"{None if attention_mask is None else list(attention_mask.shape)} gave "
                f"{list(out.shape)}"
            )
        if self.pooling == "cls":
            return out[:, 0, :]
        mask = attention_mask.astype(out.dtype)[..., None]
        return (out * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1)


_POOLING_TEXT = {
    "mean": "mean-pooled over the attention mask",
    "cls": "first token",
}

_DTYPES = {1: "float", 10: "float16", 11: "double", 16: "bfloat16", 6: "int32", 7: "int64"}
FLOAT_TYPES = ("float", "float16", "double", "bfloat16")


def model_outputs(model_path: Path) -> list[OutputInfo]:
    """The graph's outputs as declared (names, element types, dims)."""
    found = []
    for out in load_graph(model_path).graph.output:
        elem_type = out.type.tensor_type.elem_type
        dtype = _DTYPES.get(elem_type, f"type {elem_type}")
        found.append(OutputInfo(out.name, dtype, dims_of(out)))
    return found


def probe(
    infos: Sequence[OutputInfo], arrays: Sequence[np.ndarray], inputs: Mapping[str, np.ndarray]
) -> list[OutputInfo]:
    """`infos` classified by one real run's `arrays` (in graph order) on `inputs`: a float
    `[batch, ...]` output is a sequence when its second axis follows the batch's length, else
    features; dims the graph left unknown are filled from the run."""
    ids = inputs.get("input_ids")
    if ids is None:
        ids = next(iter(inputs.values()))
    batch, length = ids.shape[:2]
    out = []
    for info, array in zip(infos, arrays, strict=True):
        array = np.asarray(array)
        dims = info.dims if info.dims is not None and len(info.dims) == array.ndim else None
        dims = dims or tuple(int(n) for n in array.shape)
        kind, why_not = None, ""
        if info.dtype not in FLOAT_TYPES and not np.issubdtype(array.dtype, np.floating):
            why_not = "not a float output"
        elif array.ndim < 2 or array.shape[0] != batch:
            why_not = f"no [batch, ...] shape (a batch of {batch} gave {list(array.shape)})"
        elif array.ndim == 3 and array.shape[1] == length:
            kind = SEQUENCE
        elif array.ndim == 2:
            kind = FEATURES
        else:
            why_not = f"neither {FEATURES} nor {SEQUENCE}"
        out.append(replace(info, dims=dims, kind=kind, why_not=why_not))
    return out


def ort_message(exc: BaseException) -> str:
    """An onnxruntime error in one line, without its `[ONNXRuntimeError] : 2 : FAIL :`."""
    return re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", first_line(exc))


def run_fp32(
    model_path: Path, infos: Sequence[OutputInfo], inputs: Mapping[str, np.ndarray], shape: str
) -> list[OutputInfo]:
    """`infos` classified (`probe`) by one fp32 run on `inputs`, the batch most likely to
    fail (the longest: positions past what the model was exported for); a model that does
    not load or run is a `TaskError` naming the serving `shape` options."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4  # the failure is reported below, in one line
    try:
        session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - the user's model
        raise TaskError(
            f"--model `{model_path}` must load in onnxruntime, but it failed: {ort_message(exc)}"
        ) from None
    try:
        arrays = session.run([i.name for i in infos], dict(inputs))
    except Exception as exc:  # noqa: BLE001 - the user's model
        raise TaskError(
            f"the fp32 model must run on a batch of shape {list(inputs['input_ids'].shape)} "
            f"({shape}; is --max-length within what the model accepts?), but onnxruntime "
            f"failed: {ort_message(exc)}"
        ) from None
    return probe(infos, arrays, inputs)


def outputs_text(infos: Sequence[OutputInfo]) -> str:
    """The outputs in one line, for messages: `name` type [dims], ..."""
    return "; ".join(str(i) + ("" if i.kind or not i.why_not else f" ({i.why_not})") for i in infos)


def is_logits(name: str) -> bool:
    """A classification head's output, by the name exporters give it."""
    return name.lower().split("/")[-1].split(".")[-1].endswith("logits")


def check_output_name(infos: Sequence[OutputInfo], requested: str | None) -> None:
    """`--output` must name one of the model's outputs (checked before anything is run)."""
    names = [i.name for i in infos]
    if requested is not None and requested not in names:
        raise TaskError(
            f"--output must name one of the model's outputs ({outputs_text(infos)}), but got "
            f"{requested!r}"
        )


def choose_output(
    infos: Sequence[OutputInfo], requested: str | None = None, pooling: str | None = None
) -> OutputChoice:
    """The output the metric reads: `requested`, else the classification logits, else the
    first [batch, features] output, else the first sequence output pooled (`pooling`, default
    mean over the attention mask). `infos` must be classified (`probe`)."""
    if pooling is not None and pooling not in POOLINGS:
        raise TaskError(f"--pooling must be one of {', '.join(POOLINGS)}, but got {pooling!r}")
    check_output_name(infos, requested)
    usable = [i for i in infos if i.kind is not None]
    if requested is not None:
        chosen = next(i for i in infos if i.name == requested)
        if chosen.kind is None:
            others = f" (usable: {outputs_text(usable)})" if usable else ""
            raise TaskError(
                f"--output must name a {FEATURES} or {SEQUENCE} float output, but "
                f"{chosen} is {chosen.why_not}{others}"
            )
        why = "--output"
    else:
        features = [i for i in usable if i.kind == FEATURES]
        logits = [i for i in features if is_logits(i.name)]
        sequences = [i for i in usable if i.kind == SEQUENCE]
        if logits:
            chosen, why = logits[0], "the classification logits"
        elif features:
            chosen, why = features[0], f"the first {FEATURES} output"
        elif sequences:
            chosen, why = sequences[0], f"no {FEATURES} output; the first sequence output"
        else:
            raise TaskError(
                f"the model must have a float {FEATURES} or {SEQUENCE} output for the metric "
                f"to read, but its outputs are {outputs_text(infos) or 'none'}"
            )
    if chosen.kind == FEATURES:
        if pooling is not None:
            raise TaskError(
                f"--pooling applies to a {SEQUENCE} output, but `{chosen.name}` is "
                f"{chosen.shape_text}; leave --pooling out or pick a sequence --output"
            )
        return OutputChoice(chosen.name, "none", chosen.shape_text, why)
    return OutputChoice(chosen.name, pooling or "mean", chosen.shape_text, why)


def described(choice: OutputChoice, infos: Sequence[OutputInfo]) -> dict[str, Any]:
    """What the study records about the outputs: the choice and every output's shape."""
    return {**choice.describe(), "outputs": {i.name: i.shape_text for i in infos}}
