"""Export a trial's model: a folder Optimum loads, with the tokenizer, its ORTConfig, the
session options it was measured with, and a model card.

The model is quantized again from its recorded config (quantization is deterministic, and
static ranges come from the same calibration data), then scored again: the export reports
both the recorded and the re-measured metric, so a mismatch cannot pass silently.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial

from search.calibrate import CalibrationCache
from search.config import QuantConfig
from search.errors import QsearchError
from search.files import temp_dir
from search.measure import make_session
from search.quantize import optimum_config, quantization_source, quantize
from search.results import best_row, pooled_speeds
from search.tasks.base import TextClassificationTask
from search.tasks.outputs import is_logits
from search.trial_kind import is_measured, source_number, why
from search.worker import describe_worker

SESSION_FILE = "qsearch_session.json"


@dataclass(frozen=True)
class Exported:
    path: Path
    trial: int
    recorded: float
    measured: float


def choose_trial(
    study: optuna.Study, number: int | None, best: bool, max_drop: float = 0.01
) -> FrozenTrial:
    """Trial `number`, or with `best` the fastest config within `max_drop` of fp32 by pooled
    speedup: the frontier's best (`results.best_row`), as the report and `show` name it."""
    trials = study.get_trials(deepcopy=False)
    if best:
        top = best_row(study, max_drop)
        if top is None:
            raise QsearchError(
                f"--best found no finished trial within --max-drop {max_drop} of fp32 in study "
                f"{study.study_name!r}; raise --max-drop or pick one with --trial N"
            )
        return trials[int(top["trial"])]
    if number is None:
        raise QsearchError("export needs --trial N or --best")
    if not 0 <= number < len(trials):
        raise QsearchError(
            f"--trial must be a trial number of study {study.study_name!r} (0-{len(trials) - 1}), "
            f"but got {number}"
        )
    trial = trials[number]
    source = source_number(trial)
    if source is not None:
        trial = trials[source]
    if not is_measured(trial) or "config" not in trial.user_attrs:
        raise QsearchError(f"--trial {number} must be a finished trial, but it is {why(trial)}")
    return trial


def model_card(
    trial: FrozenTrial,
    config: QuantConfig,
    metric: str,
    measured: float,
    pooled=None,
    loader: str = "ORTModelForSequenceClassification",
) -> str:
    """The exported folder's README; `pooled` (a `search.pooled.Pooled`) is the speedup the
    report and `show` give, pooled over every timed block, else the trial's own; `loader` the
    Optimum class that loads the folder (`loader_class`)."""
    a = trial.user_attrs
    worker = a.get("worker") or {}
    fusions = ",".join(config.disabled_fusions)
    options = (
        "import onnxruntime as ort\n\noptions = ort.SessionOptions()\n"
        + (
            f'options.add_session_config_entry("optimization.disable_specified_optimizers", '
            f'"{fusions}")\n'
            if fusions
            else ""
        )
        + (
            ""
            if config.graph_optimization == "all"
            else f"options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_"
            f"{config.graph_optimization.upper()}\n"
        )
    )
    load_args = ", session_options=options" if "options." in options else ""
    speedup = (
        f"{trial.values[1]:.3f}x (95% interval {a.get('speedup_low', 0):.3f}-"
        f"{a.get('speedup_high', 0):.3f})"
    )
    if pooled is not None and pooled.blocks > 1:
        speedup = (
            f"{pooled.speedup:.3f}x (95% interval {pooled.low:.3f}-{pooled.high:.3f}; "
            f"{pooled.blocks} timed blocks pooled; the trial alone read {trial.values[1]:.3f}x)"
        )
    size = f"{a.get('model_size_mb', 0):.1f} MB (fp32 {a.get('model_size_fp32_mb', 0):.1f} MB)"
    where = (
        f"{describe_worker(worker)}, onnxruntime {worker.get('onnxruntime', '?')}, "
        f"{worker.get('threads', '?')} thread(s)"
    )
    rows = [
        (f"{metric} (recorded)", f"{trial.values[0]:.4f}"),
        (f"{metric} (re-measured at export)", f"{measured:.4f}"),
        (f"fp32 {metric}", f"{a.get('accuracy_fp32', float('nan')):.4f}"),
        ("speedup over fp32", speedup),
        ("model size", size),
        ("measured on", where),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return f"""# Quantized model (qsearch trial {trial.number})

**Config:** {config.describe()}

| | value |
|---|---|
{table}

Speedups were measured interleaved with the fp32 model on that CPU; other CPUs (with or
without AVX512-VNNI) give other ratios. The quantization is Optimum's `ort_config.json`.

## Load it

```python
from optimum.onnxruntime import {loader}
{options}
model = {loader}.from_pretrained("<this folder>"{load_args})
```

The session options above are part of the searched config ({SESSION_FILE}); without them
the model is correct but may be slower.
"""


def loader_class(task: TextClassificationTask) -> str:
    """The Optimum class that loads the exported folder: a classifier's when the metric reads
    logits, else the encoder's (its outputs are features, not classes)."""
    if is_logits(task.reading.name):
        return "ORTModelForSequenceClassification"
    return "ORTModelForFeatureExtraction"


def export_trial(
    study: optuna.Study,
    trial: FrozenTrial,
    task: TextClassificationTask,
    out: Path,
    force: bool = False,
) -> Exported:
    from optimum.onnxruntime.configuration import ORTConfig

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise QsearchError(f"--out `{out}` must be a new or empty folder (or pass --force)")
    config = QuantConfig.from_dict(trial.user_attrs["config"])
    out.parent.mkdir(parents=True, exist_ok=True)
    work = temp_dir(out.parent, prefix=f".{out.name}-")
    try:
        calibration = CalibrationCache(task)
        ranges = calibration.ranges(config)
        smoothed = calibration.smoothed(config)
        quantized = quantize(config, task.model_path, work / "quantized", ranges, smoothed)
        quantized.rename(work / "model.onnx")
        source_config = task.model_path.parent / "config.json"
        if source_config.exists():
            shutil.copyfile(source_config, work / "config.json")  # mode: the umask's
        task.tokenizer.save_pretrained(work)
        # node names as quantize() resolved them: on the fused or smoothed copy it quantized
        source = quantization_source(config, task.model_path, smoothed)
        ORTConfig(quantization=optimum_config(config, source)).save_pretrained(work)
        session = {
            "graph_optimization": config.graph_optimization,
            "disabled_fusions": list(config.disabled_fusions),
            "config": config.to_dict(),
        }
        (work / SESSION_FILE).write_text(json.dumps(session, indent=2))
        shutil.rmtree(work / "quantized")
        fp32 = None
        if task.metric in ("agreement", "cosine"):
            fp32 = task.outputs(make_session(task.model_path))
        model = make_session(work / "model.onnx", config.session_options())
        measured = task.score(task.outputs(model), fp32)
        pooled = pooled_speeds(study).get(trial.number)
        card = model_card(trial, config, task.metric, measured, pooled, loader_class(task))
        (work / "README.md").write_text(card)
        if out.exists():
            shutil.rmtree(out)
        work.rename(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Exported(out, trial.number, trial.values[0], measured)
