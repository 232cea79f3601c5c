"""Sensitivity: what quantizing each part of the model alone costs, for one base config.

For every group of `search.structure` that the base config quantizes (`layer<i>.<role>`,
`embeddings`, `head`), the *leave-one-group-in* config quantizes that group only (every
other group kept fp32, through `fp32_groups`) and is scored against fp32 on the first quarter
of the evaluation set (the first two of `task.eval_slices`: a uniform random sample): the mean
squared error of the metric's output (logits), the share of examples whose class matches
fp32's, and the metric's drop on that slice. Groups are ranked by the error, most costly first:
the order in which the fallback strategy (`search.strategies.fallback`) keeps them fp32.

Why this source and not onnxruntime's `qdq_loss_debug` (per-tensor error between fp32 and
QDQ activations): it measures what the bar is about (the model's outputs, and the metric),
with no attribution step from tensors to groups; it works for every config a space holds
(dynamic and QOperator as well as QDQ, which is all `qdq_loss_debug` reads); and it reuses the
run's own quantizer and cached calibration ranges. Its cost is one quantization and one pass
over a quarter of the evaluation data per group. Measured side by side on the tiny task
(static QDQ U8S8 MatMul, 48 examples): `qdq_loss_debug` is cheaper (0.24 s for all 32 matched
tensors, after 1.3 s for the one quantization; leave-one-group-in 1.2 s for 11 groups), but
its ranking (lowest SQNR of a group's input tensors first) barely agrees with what each group
does to the outputs (Spearman 0.16), and it ranks worse: keeping the top k groups fp32 in
each order, on all 192 examples, the logits' MSE was 7.7e-9 (k=4) and 4.2e-11 (k=6, class
agreement 0.990) in leave-one-group-in order, against 2.8e-8 and 2.1e-8 (0.901) in
`qdq_loss_debug`'s, which puts the attention products first (SQNR 3 dB: a QDQ pair's local
noise, not what it costs downstream).
Measured on the tiny test task (2 layers, hidden 32, 48 of 192 evaluation examples, 2 shared
cores): 0.04-0.06 s per group, 11-12 groups, 0.6-0.7 s per table (4.2 s for a process's first
table: library warm-up); read back from the disk cache in under 1 ms. What it found there:
static QOperator U8S8 MatMul+Gather: the embeddings alone cost the most (MSE of logits
2.9e-8, class agreement with fp32 0.958), then the attention products of layer 1 and 0
(8.8e-9, 3.5e-9), while every weight MatMul group stayed below 5e-11 with agreement 1.000;
the whole config scored 1.5e-8 and 0.854, less than the embeddings alone: errors do not add
up, which is why the fallback strategy also tries to quantize reverted groups again. In QDQ
format the `qkv` and `ffn_up` groups cost 1e-8 each (a QDQ pair quantizes the tensor, so the
residual branch that reads it too is hit) against 2e-12 in QOperator: sensitivity is a
property of the (model, base config) pair, and is keyed by both. Dynamic MatMul groups all
cost 7e-9 to 9e-9: nothing to choose between, as expected when activations are quantized per
batch. On a slice this size accuracy alone moved by at most one example of 48 per group and
cannot rank them; the output error can, so it is the ranking key (the drop is shown beside).

Results are computed once per (model, base config, evaluation slice, library versions) and
kept on disk under `$QSEARCH_HOME/sensitivity/<key>.json`, like calibration ranges; the study
holds the last one computed in its `sensitivity` user attribute, for `qsearch sensitivity`
and the report.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from search.config import QuantConfig, make_session_options
from search.files import atomic_write
from search.structure import Structure, is_selector, model_structure

SOURCE = "leave-one-group-in"
FORMAT = 1
STUDY_ATTR = "sensitivity"
BASE_ROW = "(base: every group)"
_SLICES = 2  # of `task.eval_slices` (1/8 + 1/8 of the evaluation set by default)


def quantized_groups(structure: Structure, base: QuantConfig) -> list[str]:
    """The groups with at least one node the base config quantizes: Gathers (embeddings)
    when it quantizes Gather, MatMuls when it quantizes MatMul or Gemm, less what it keeps
    fp32 (its `fp32_groups`, excluded nodes and, in the `weights` scope, attention products)."""
    kept = set(base.nodes_to_exclude(structure))
    ops = set(base.operators)
    out = []
    for group, nodes in sorted(structure.groups.items()):
        wanted = {"Gather"} if group == "embeddings" else {"MatMul", "Gemm"}
        if not ops & wanted or not is_selector(group):
            continue
        if set(nodes) - kept:
            out.append(group)
    return out


def leave_one_in(base: QuantConfig, group: str, groups: list[str]) -> QuantConfig:
    """`base` quantizing `group` and nothing else of `groups`."""
    others = set(base.fp32_groups) | (set(groups) - {group})
    return base.replace(fp32_groups=sorted(others))


def cache_key(task, base: QuantConfig) -> str:
    import onnxruntime
    import optimum.version

    parts = {
        "format": FORMAT,
        "source": SOURCE,
        "model": task.model_digest,
        "base": base.key,
        "examples": [b.index.tolist() for part in task.eval_slices[:_SLICES] for b in part],
        "output": task.reading.name,
        "metric": task.metric,
        "onnxruntime": onnxruntime.__version__,
        "optimum": optimum.version.__version__,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def _cache_dir() -> Path:
    from search.tasks.default import qsearch_home

    return qsearch_home() / "sensitivity"


def _fidelity(task, outputs: np.ndarray, fp32: np.ndarray, refs) -> dict[str, float]:
    from search.metrics import score

    mse = float(np.mean((outputs.astype(np.float64) - fp32) ** 2))
    row = {"mse": mse}
    # class agreement: only where the outputs are classes (a cosine task's are features)
    if task.metric != "cosine" and outputs.ndim == 2 and outputs.shape[1] > 1:
        row["agreement"] = float(np.mean(outputs.argmax(-1) == fp32.argmax(-1)))
    try:
        metric = score(task.metric, outputs, refs, fp32)
        row["metric_drop"] = float(score(task.metric, fp32, refs, fp32) - metric)
    except Exception:  # noqa: BLE001 - a metric that cannot read a slice: the error still ranks
        pass
    return row


def compute_sensitivity(task, base: QuantConfig, cache: bool = True) -> dict[str, Any]:
    """The sensitivity table of `base` on `task` (see the module docstring), from the disk
    cache when it holds it."""
    key = cache_key(task, base)
    path = _cache_dir() / f"{key}.json" if cache else None
    if path is not None and path.is_file():
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            pass  # unreadable: recompute
    from search.calibrate import CalibrationCache
    from search.measure import make_session
    from search.quantize import quantization_source, quantize

    started = time.perf_counter()
    calibration = CalibrationCache(task)
    smoothed = calibration.smoothed(base)
    # a fused or smoothed base: the names of the copy it quantizes
    structure = model_structure(quantization_source(base, task.model_path, smoothed))
    groups = quantized_groups(structure, base)
    batches = [b for part in task.eval_slices[:_SLICES] for b in part]
    refs = task.eval_references
    count = sum(len(b) for b in batches)
    refs = None if refs is None else refs[:count]
    threads = os.cpu_count() or 1
    fp32 = task.outputs(
        make_session(task.model_path, make_session_options(threads=threads)), batches
    )
    ranges = calibration.ranges(base)
    rows = []
    work = Path(tempfile.mkdtemp(prefix="qsearch-sensitivity-"))
    try:
        for group in [BASE_ROW, *groups]:
            t = time.perf_counter()
            config = base if group == BASE_ROW else leave_one_in(base, group, groups)
            out = work / f"g{len(rows)}"
            try:
                model = quantize(config, task.model_path, out, ranges, smoothed)
                session = make_session(model, config.session_options(threads))
                row = _fidelity(task, task.outputs(session, batches), fp32, refs)
            except Exception as exc:  # noqa: BLE001 - one group failing is its answer
                row = {"mse": float("inf"), "error": f"{type(exc).__name__}: {exc}"[:300]}
            finally:
                shutil.rmtree(out, ignore_errors=True)
            nodes = len(structure.groups.get(group, ()))
            rows.append({"group": group, "nodes": nodes, **row, "seconds": time.perf_counter() - t})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base_row, group_rows = rows[0], rows[1:]
    group_rows.sort(key=lambda r: (-r["mse"], -r.get("metric_drop", 0.0), r["group"]))
    result = {
        "source": SOURCE,
        "key": key,
        "base": base.to_dict(),
        "base_key": base.key,
        "base_description": base.describe(),
        "examples": count,
        "metric": task.metric,
        "output": task.reading.name,
        "base_row": base_row,
        "rows": group_rows,
        "seconds": round(time.perf_counter() - started, 3),
    }
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(path) as f:
                f.write(json.dumps(result, allow_nan=True))
        except OSError:  # a read-only disk only costs the next run the computation
            pass
    return result


def order(sensitivity: dict[str, Any]) -> list[str]:
    """Group names, most costly first."""
    return [row["group"] for row in sensitivity.get("rows", [])]


def store(study, sensitivity: dict[str, Any]) -> None:
    """Keep the table in the study (what `qsearch sensitivity` and the report read)."""
    study.set_user_attr(STUDY_ATTR, json.loads(json.dumps(sensitivity, allow_nan=True)))


def stored(study) -> dict[str, Any] | None:
    return study.user_attrs.get(STUDY_ATTR)


def table_rows(sensitivity: dict[str, Any]) -> list[dict[str, Any]]:
    """The base row then the groups, most costly first, for tables and charts."""
    base = {**sensitivity.get("base_row", {}), "group": BASE_ROW}
    return [base, *sensitivity.get("rows", [])]
