"""The shape-inferred copy of a model that onnxruntime's quantizer reads, made once per model.

onnxruntime's quantizer shape-infers every model it is given unless the model carries its
mark (`onnx.infer = onnxruntime.quant` in `metadata_props`): it saves the whole model to a
temporary folder, runs ONNX shape inference on the file and loads it back. On a
BERT-base-size model that is 1-3 s (more while the disk is cold), and dynamic quantization
does it twice: again after rewriting Gemms into MatMuls. So most of a dynamic trial's
quantization went to inferring the same shapes of the same model. Here both passes are run
once per model, by onnxruntime's own functions, and the result cached under
`$QSEARCH_HOME/inferred` (keyed by the model's bytes, the pass and the library versions):
for static quantization the model inferred; for dynamic, that with its Gemms rewritten as the
dynamic quantizer rewrites them, inferred again. Given such a copy the quantizer skips the
first pass (the model is marked), its rewrite finds no Gemm to change, and its second pass
is skipped (`second_inference_skipped`): it would reproduce the shapes the copy carries.
The quantized bytes are the same as before, checked by the tests. A model over 2 GB keeps its
weights in files beside it (ONNX's external data): they are part of the key, and a copy that
large is written the same way.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

from search.files import temp_dir
from search.model_files import external_files, file_sha256, file_version

INFERRED_FORMAT = 1
# Above this many bytes of weights a model cannot be one protobuf file (the 2 GiB limit).
EXTERNAL_DATA_BYTES = 1_800_000_000


def _key(model: Path, dynamic: bool) -> str:
    import onnx
    import onnxruntime

    parts = {
        "format": INFERRED_FORMAT,
        "gemm_as_matmul": dynamic,
        "model": file_sha256(model),
        "external": [[p.name, file_sha256(p)] for p in external_files(model)],
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def inferred_model(model: Path, dynamic: bool, home: Path | None = None) -> Path:
    """The copy of `model` that onnxruntime's quantizer would make of it in memory before
    quantizing (shapes inferred and marked; for `dynamic`, Gemms rewritten into MatMuls and
    inferred again), made on first use and kept under `$QSEARCH_HOME/inferred`."""
    import onnx
    from onnxruntime.quantization.onnx_model import ONNXModel
    from onnxruntime.quantization.quant_utils import save_and_reload_model_with_shape_infer

    from search.tasks.default import qsearch_home

    model = Path(model).resolve()
    dynamic = dynamic and has_gemm(model)  # without Gemms the two copies are one
    folder = (home or qsearch_home()) / "inferred" / _key(model, dynamic)
    path = folder / model.name
    if path.exists():
        return path
    inferred = save_and_reload_model_with_shape_infer(onnx.load(str(model)))
    if dynamic:  # as onnxruntime's ONNXQuantizer does for dynamic quantization
        rewritten = ONNXModel(inferred)
        rewritten.replace_gemm_with_matmul()
        inferred = save_and_reload_model_with_shape_infer(rewritten.model)
    weights = sum(t.ByteSize() for t in inferred.graph.initializer)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir(folder.parent, f".{folder.name}-")
    try:
        onnx.save_model(
            inferred,
            str(tmp / model.name),
            save_as_external_data=weights > EXTERNAL_DATA_BYTES,
            location=f"{model.name}.data",
        )
        try:
            tmp.rename(folder)
        except OSError:  # another worker made it first: theirs is the same file
            if not path.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


@functools.lru_cache(maxsize=16)
def _has_gemm(path: str, mtime_ns: int, size: int) -> bool:
    import onnx

    graph = onnx.load(path, load_external_data=False).graph
    return any(node.op_type == "Gemm" for node in graph.node)


def has_gemm(model: Path) -> bool:
    """Whether the model's main graph has a Gemm (read once per file version)."""
    return _has_gemm(*file_version(model))


@contextlib.contextmanager
def second_inference_skipped(model: Path) -> Iterator[None]:
    """While quantizing `model` (a marked copy from `inferred_model`, without Gemms):
    onnxruntime's dynamic quantizer's shape inference after its Gemm-to-MatMul rewrite (which
    finds nothing to rewrite) returns the model it was given. With a Gemm left, or an
    onnxruntime without that step, nothing changes."""
    from onnxruntime.quantization import onnx_quantizer
    from onnxruntime.quantization.quant_utils import model_has_infer_metadata

    original = getattr(onnx_quantizer, "save_and_reload_model_with_shape_infer", None)
    if original is None or has_gemm(model):
        yield
        return

    def reuse(proto):
        return proto if model_has_infer_metadata(proto) else original(proto)

    onnx_quantizer.save_and_reload_model_with_shape_infer = reuse
    try:
        yield
    finally:
        onnx_quantizer.save_and_reload_model_with_shape_infer = original
