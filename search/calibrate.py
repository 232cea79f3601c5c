"""Calibration ranges for static quantization, computed once per method and reused.

Ranges depend on the model, the calibration data and the method, not on which operators a
trial quantizes, so they are computed once with every operator static mode can quantize and
passed to each trial (`calibration_tensors_range`): identical logits, a fraction of the cost.
"""

from __future__ import annotations

import io
import tempfile
from contextlib import redirect_stdout
from pathlib import Path

from search.config import QuantConfig, quantizable_operators
from search.errors import TrialError
from search.quantize import quiet_libraries
from search.tasks.base import TextClassificationTask

# Histogram calibrators (entropy, percentile) fail on the attention mask's -3.4e38 values,
# which reach the model through Where and Add: those inputs are left out of their ranges, and
# a config that quantizes these operators with a histogram method fails at once, saying why.
HISTOGRAM_METHODS = ("entropy", "percentile")
HISTOGRAM_EXCLUDED = frozenset({"Where", "Add"})


class CalibrationCache:
    """In-run memo of ranges keyed by (model digest, method, percentile)."""

    def __init__(self, task: TextClassificationTask, batch_size: int = 8) -> None:
        self.task = task
        self.batch_size = batch_size
        self._ranges: dict[tuple, object] = {}

    def key(self, config: QuantConfig) -> tuple:
        return (self.task.model_digest, config.calibration, config.percentile)

    def ranges(self, config: QuantConfig):
        if config.mode != "static":
            return None
        if config.calibration in HISTOGRAM_METHODS:
            blocked = sorted(set(config.operators) & HISTOGRAM_EXCLUDED)
            if blocked:
                raise TrialError(
                    f"{config.calibration} calibration cannot range the inputs of {blocked} "
                    f"(the attention mask's -3.4e38 values break its histogram); quantize "
                    f"them with minmax calibration or leave them out"
                )
        key = self.key(config)
        if key not in self._ranges:
            self._ranges[key] = compute_ranges(self.task, config, self.batch_size)
        return self._ranges[key]


def compute_ranges(task: TextClassificationTask, config: QuantConfig, batch_size: int = 8):
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoCalibrationConfig

    quiet_libraries()
    dataset = task.calibration_dataset()
    # Histogram calibrators stack every batch's outputs: all batches must have one shape.
    batch_size = max(1, min(batch_size, len(dataset)))
    dataset = dataset.select(range(len(dataset) - len(dataset) % batch_size))
    if config.calibration == "minmax":
        calibration = AutoCalibrationConfig.minmax(dataset)
    elif config.calibration == "entropy":
        calibration = AutoCalibrationConfig.entropy(dataset)
    else:
        calibration = AutoCalibrationConfig.percentiles(dataset, percentile=config.percentile)
    operators = set(task.operators) & quantizable_operators("static", "QDQ")
    if config.calibration in HISTOGRAM_METHODS:
        operators -= HISTOGRAM_EXCLUDED
    operators = sorted(operators)
    model = Path(task.model_path)
    quantizer = ORTQuantizer.from_pretrained(model.parent, file_name=model.name)
    # fit() writes an augmented copy of the model; keep it out of the working directory.
    # onnxruntime's histogram calibrators print their progress; the search shows its own.
    with (
        tempfile.TemporaryDirectory(prefix="qsearch-calib-") as tmp,
        redirect_stdout(io.StringIO()),
    ):
        return quantizer.fit(
            dataset=dataset,
            calibration_config=calibration,
            onnx_augmented_model_name=Path(tmp) / "augmented.onnx",
            operators_to_quantize=operators,
            batch_size=batch_size,
        )
