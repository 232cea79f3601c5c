"""The model's inputs, filled from the tokenizer's encoding.

Encoders exported by others differ in what they take: with or without `token_type_ids`, with
`position_ids`, int32 or int64, with fixed or dynamic batch and sequence axes. Every input is
checked against what qsearch can fill before anything runs, so a model it cannot feed is one
message naming the input, not an onnxruntime error in the middle of a search.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from search.errors import TaskError

PADDINGS = ("longest", "max_length")
# Inputs qsearch fills: the tokenizer's ids and mask; segment ids (zeros when the tokenizer
# gives none: a single sentence is segment 0); positions 0..length-1 (padding is on the right).
FILLED = ("input_ids", "attention_mask", "token_type_ids", "position_ids")
_DTYPES = {6: np.int32, 7: np.int64}


@dataclass(frozen=True)
class InputInfo:
    """One graph input: name, ONNX element type and declared dims (int, name or None)."""

    name: str
    elem_type: int
    dims: tuple[int | str | None, ...] | None

    @property
    def dtype(self) -> type | None:
        return _DTYPES.get(self.elem_type)

    @property
    def shape_text(self) -> str:
        if self.dims is None:
            return "[?]"
        return "[" + ", ".join("?" if d is None else str(d) for d in self.dims) + "]"


def load_graph(model_path: Path):  # -> onnx.ModelProto, without external weights
    """The model's graph; a file that is not an ONNX model is a `TaskError`."""
    import onnx

    try:
        return onnx.load(str(model_path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - a file that is not an ONNX model
        raise TaskError(
            f"--model `{model_path}` must be an ONNX model, but onnx could not read it: "
            f"{type(exc).__name__}"
        ) from None


def dims_of(value) -> tuple[int | str | None, ...] | None:
    """A graph value's declared dims: ints where fixed, names where symbolic, else None."""
    tensor = value.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    return tuple(
        d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim
    )


def model_inputs(model_path: Path) -> list[InputInfo]:
    """The graph inputs a caller must feed (initializers listed as inputs left out)."""
    model = load_graph(model_path)
    initializers = {i.name for i in model.graph.initializer}
    found = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        found.append(InputInfo(value.name, value.type.tensor_type.elem_type, dims_of(value)))
    return found


def check_inputs(
    inputs: Sequence[InputInfo], batch_size: int, max_length: int, padding: str
) -> None:
    """Refuse, naming the input, what qsearch cannot fill or a fixed shape the serving shape
    does not fit."""
    names = [i.name for i in inputs]
    if "input_ids" not in names:
        raise TaskError(
            f"the model must take `input_ids` (token ids from the tokenizer), but its inputs "
            f"are {', '.join(names) or 'none'}"
        )
    for info in inputs:
        if info.name not in FILLED:
            raise TaskError(
                f"the model's input `{info.name}` {info.shape_text} is not one qsearch can "
                f"fill (it fills {', '.join(FILLED)}); export the model without it"
            )
        if info.dtype is None:
            raise TaskError(
                f"the model's input `{info.name}` must be int64 or int32, but its ONNX element "
                f"type is {info.elem_type}"
            )
        if info.dims is None:
            continue
        if len(info.dims) != 2:
            raise TaskError(
                f"the model's input `{info.name}` must be [batch, sequence], but it is "
                f"{info.shape_text}"
            )
        batch, length = info.dims
        if isinstance(batch, int) and batch > 0 and not batch == batch_size == 1:
            raise TaskError(
                f"the model's input `{info.name}` has a fixed batch size of {batch}; qsearch "
                f"runs batches of other sizes (the last evaluation batch, latency): export it "
                f"with a dynamic batch axis, or pass --batch-size 1 for a batch-1 model"
            )
        if (
            isinstance(length, int)
            and length > 0
            and (padding != "max_length" or max_length != length)
        ):
            raise TaskError(
                f"the model's input `{info.name}` has a fixed length of {length}: pass "
                f"--padding max_length --max-length {length}, but got --padding {padding} "
                f"--max-length {max_length}"
            )


def fill(encoded: Mapping[str, np.ndarray], inputs: Sequence[InputInfo]) -> dict[str, np.ndarray]:
    """The model's inputs (its own integer types) from a tokenizer's encoding."""
    ids = np.asarray(encoded["input_ids"])
    out = {}
    for info in inputs:
        if info.name in encoded:
            value = np.asarray(encoded[info.name])
        elif info.name == "token_type_ids":
            value = np.zeros_like(ids)
        elif info.name == "position_ids":
            value = np.broadcast_to(np.arange(ids.shape[1]), ids.shape)
        else:
            raise TaskError(
                f"the tokenizer must produce the model's input `{info.name}`, but it does not"
            )
        out[info.name] = np.ascontiguousarray(value, dtype=info.dtype or np.int64)
    return out
