"""A model file's identity, read once per file version: its SHA-256, and the files beside it
that hold its weights (ONNX external data). The one home of "which model is this?" for the
caches keyed on it (calibration, fused, smoothed and inferred copies, sensitivity) and the
study's `model_sha256`."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path


def file_version(path: Path | str) -> tuple[str, int, int]:
    """(resolved path, mtime in ns, size): what a per-file cache is keyed on, so a file
    rewritten in place is read again."""
    stat = Path(path).stat()
    return str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size


@functools.lru_cache(maxsize=16)
def _sha256(path: str, mtime_ns: int, size: int) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def file_sha256(path: Path | str) -> str:
    """The file's SHA-256 (hex), computed once per file version."""
    return _sha256(*file_version(path))


def file_digest(path: Path | str) -> str:
    """The first 16 hex digits of the file's SHA-256."""
    return file_sha256(path)[:16]


@functools.lru_cache(maxsize=16)
def _external_names(path: str, mtime_ns: int, size: int) -> tuple[str, ...]:
    import onnx

    proto = onnx.load(path, load_external_data=False)
    names: dict[str, None] = {}
    for tensor in proto.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            entries = {e.key: e.value for e in tensor.external_data}
            if "location" in entries:
                names.setdefault(entries["location"])
    return tuple(names)


def external_files(model: Path | str) -> list[Path]:
    """The files beside `model` that hold its weights in ONNX's external data format (a
    model over 2 GB: `model.onnx` and `model.onnx_data`), in the order they are named; read
    once per file version."""
    return [Path(model).parent / name for name in _external_names(*file_version(model))]


def model_digest(model_path: Path | str) -> str:
    """The model's identity: its file's digest, and where its weights live in files beside
    it (ONNX external data, a model over 2 GB) theirs too: its `.onnx` then holds only the
    graph and where the weights are, the same for any weights."""
    weights = external_files(model_path)
    if not weights:
        return file_digest(model_path)
    text = "".join(file_digest(p) for p in [Path(model_path), *weights])
    return hashlib.sha256(text.encode()).hexdigest()[:16]
