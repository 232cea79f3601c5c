"""Calibration ranges for static quantization, computed once per method and reused.

Ranges depend on the model, the calibration data and the method, not on which operators a
trial quantizes, so they are computed once with every operator static mode can quantize and
passed to each trial (`calibration_tensors_range`): identical logits, a fraction of the cost.

They are also kept on disk (`$QSEARCH_HOME/calibration/<key>.npz`), keyed by a content hash
of everything they depend on (model bytes, calibration rows, method and its parameters, the
operators ranged, onnxruntime and optimum versions), so a resumed or new search on the same
model calibrates once (13 s on the default task). Files are written to a temporary name and
renamed into place; a file that cannot be read back is ignored and recomputed.
"""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np

from search.config import QuantConfig, quantizable_operators
from search.errors import TrialError
from search.files import atomic_write
from search.quantize import quiet_libraries
from search.tasks.base import TextClassificationTask

# Histogram calibrators (entropy, percentile) fail on the attention mask's -3.4e38 values,
# which reach the model through Where and Add: those inputs are left out of their ranges, and
# a config that quantizes these operators with a histogram method fails at once, saying why.
HISTOGRAM_METHODS = ("entropy", "percentile")
HISTOGRAM_EXCLUDED = frozenset({"Where", "Add"})


# Rows per collection. onnxruntime's histogram calibrators keep every ranged tensor's output
# for all the rows they are given before building histograms: a sentence encoder's 256 movie
# reviews pack into 1,107 rows and took more than this 24 GiB machine (the trials were killed
# by the OOM killer). Given a shard at a time, with each tensor's bins fixed first
# (`_seed_histograms`), they add the shards' counts into the histograms one collection of all
# rows would build: the ranges are the same, memory is one shard's
# (benchmarks/calibration_memory.py).
SHARD_ROWS = 32

CACHE_FORMAT = 2  # 2: collected shard by shard (the same ranges; keyed anew to be sure)


def data_digest(task: TextClassificationTask) -> str:
    """The hash of the calibration rows: what ranges (and smoothed models) depend on."""
    rows = json.dumps(task.calibration_rows, sort_keys=True).encode()
    return hashlib.sha256(rows).hexdigest()


class CalibrationCache:
    """Ranges per (model, data, method, parameters): in memory for the run, and on disk
    under `directory` (default `$QSEARCH_HOME/calibration`; None keeps them in memory)."""

    def __init__(
        self,
        task: TextClassificationTask,
        batch_size: int = 8,
        directory: Path | None | str = "default",
    ) -> None:
        self.task = task
        self.batch_size = batch_size
        if directory == "default":
            from search.tasks.default import qsearch_home

            directory = qsearch_home() / "calibration"
        self.directory = None if directory is None else Path(directory)
        self._ranges: dict[str, object] = {}
        self._smoothed: dict[float, Path] = {}
        self._data_digest: str | None = None
        self.computed = 0  # ranges computed (not read back) by this cache: what it saved

    def key(self, config: QuantConfig) -> str:
        """Content hash of everything the ranges depend on."""
        import onnxruntime
        import optimum.version

        if self._data_digest is None:
            self._data_digest = data_digest(self.task)
        parts = {
            "format": CACHE_FORMAT,
            "model": self.task.model_digest,
            "data": self._data_digest,
            "method": config.calibration,
            "percentile": config.percentile if config.calibration == "percentile" else None,
            "batch_size": self.batch_size,
            "operators": ranged_operators(self.task, config),
            "smooth_quant": config.smooth_quant or None,  # ranges of the smoothed copy
            "onnxruntime": onnxruntime.__version__,
            "optimum": optimum.version.__version__,
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]

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
            ranges = self._read(key)
            if ranges is None:
                model = self.smoothed(config)
                ranges = compute_ranges(self.task, config, self.batch_size, model)
                self.computed += 1
                self._write(key, ranges)
            self._ranges[key] = ranges
        return self._ranges[key]

    def smoothed(self, config: QuantConfig) -> Path | None:
        """The SmoothQuant copy a config is calibrated on and quantized from (None: the
        task's own model), computed once per alpha (`search.smoothing`)."""
        if not config.smooth_quant:  # 0 in dynamic mode (`QuantConfig` resets it)
            return None
        from search.smoothing import smoothed_model

        if config.smooth_quant not in self._smoothed:
            self._smoothed[config.smooth_quant] = smoothed_model(
                self.task, config.smooth_quant, self.batch_size
            )
        return self._smoothed[config.smooth_quant]

    def path(self, key: str) -> Path | None:
        return None if self.directory is None else self.directory / f"{key}.npz"

    def _read(self, key: str):
        path = self.path(key)
        if path is None or not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                return ranges_from_arrays(dict(data))
        except Exception:  # noqa: BLE001 - a corrupt or foreign file: recompute it
            return None

    def _write(self, key: str, ranges) -> None:
        path = self.path(key)
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(path, "wb") as f:  # readers see the old file or the whole new one
                np.savez(f, **ranges_to_arrays(ranges))
        except OSError:  # a full or read-only disk only costs the next run a calibration
            pass


def ranges_to_arrays(ranges) -> dict[str, np.ndarray]:
    """onnxruntime's `TensorsData` as plain arrays (no pickle), plus a JSON index."""
    index: dict = {"method": ranges.calibration_method.name, "tensors": []}
    arrays: dict[str, np.ndarray] = {}
    for i, (name, data) in enumerate(ranges.items()):
        fields = []
        for attr in data._attrs:
            value = getattr(data, attr)
            fields.append([attr, isinstance(value, np.ndarray)])
            arrays[f"t{i}_{attr}"] = np.asarray(value)
        index["tensors"].append([name, fields])
    arrays["index"] = np.array(json.dumps(index))
    return arrays


def ranges_from_arrays(arrays: dict[str, np.ndarray]):
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData

    index = json.loads(str(arrays["index"]))
    data = {}
    for i, (name, fields) in enumerate(index["tensors"]):
        values = {}
        for attr, is_array in fields:
            value = arrays[f"t{i}_{attr}"]
            values[attr] = value if is_array else value.item()
        data[name] = TensorData(**values)
    return TensorsData(CalibrationMethod[index["method"]], data)


def ranged_operators(task: TextClassificationTask, config: QuantConfig) -> list[str]:
    """The operators whose inputs are ranged: all static can quantize, but the histogram
    methods leave out the mask's operators."""
    operators = set(task.operators) & quantizable_operators("static", "QDQ")
    if config.calibration in HISTOGRAM_METHODS:
        operators -= HISTOGRAM_EXCLUDED
    return sorted(operators)


def whole_batches(task: TextClassificationTask, batch_size: int = 8):  # -> (Dataset, int)
    """The calibration rows a calibrator is given, a whole number of batches of the returned
    size: histogram calibrators stack every batch's outputs, so all batches need one shape."""
    dataset = task.calibration_dataset()
    batch_size = max(1, min(batch_size, len(dataset)))
    return dataset.select(range(len(dataset) - len(dataset) % batch_size)), batch_size


def calibration_config(config: QuantConfig, dataset):  # -> optimum's CalibrationConfig
    """Optimum's calibration config for `config`'s method on `dataset`."""
    from optimum.onnxruntime.configuration import AutoCalibrationConfig

    if config.calibration == "minmax":
        return AutoCalibrationConfig.minmax(dataset)
    if config.calibration == "entropy":
        return AutoCalibrationConfig.entropy(dataset)
    return AutoCalibrationConfig.percentiles(dataset, percentile=config.percentile)


def compute_ranges(
    task: TextClassificationTask,
    config: QuantConfig,
    batch_size: int = 8,
    model_path: Path | None = None,
):
    """The ranges of every tensor static mode may quantize in `model_path` (default: the
    task's model), collected a shard of rows at a time (`SHARD_ROWS`) by Optimum's
    calibrator for the method."""
    from optimum.onnxruntime.quantization import ORTCalibrationDataReader

    quiet_libraries()
    dataset, batch_size = whole_batches(task, batch_size)
    calibration = calibration_config(config, dataset)
    shard = max(batch_size, SHARD_ROWS - SHARD_ROWS % batch_size)
    shards = [
        dataset.select(range(start, min(start + shard, len(dataset))))
        for start in range(0, len(dataset), shard)
    ]
    # The calibrator writes an augmented copy of the model; keep it out of the working
    # directory. onnxruntime's histogram calibrators print their progress; the search shows
    # its own. (`ORTQuantizer.partial_fit` would make a new calibrator for every shard.)
    with (
        tempfile.TemporaryDirectory(prefix="qsearch-calib-") as tmp,
        redirect_stdout(io.StringIO()),
    ):
        calibrator = calibration.create_calibrator(
            onnx_model_path=Path(model_path or task.model_path),
            operators_to_quantize=ranged_operators(task, config),
            augmented_model_name=str(Path(tmp) / "augmented.onnx"),
        )
        if _seedable(calibrator):
            _seed_histograms(calibrator, shards, batch_size)
        for rows in shards:
            calibrator.collect_data(ORTCalibrationDataReader(rows, batch_size))
        return calibrator.compute_data()


def _seedable(calibrator) -> bool:
    """A histogram calibrator whose collector bins values over (-threshold, threshold)."""
    from onnxruntime.quantization.calibrate import HistogramCalibrater

    return isinstance(calibrator, HistogramCalibrater) and (
        calibrator.method != "percentile" or not calibrator.symmetric
    )


def _seed_histograms(calibrator, shards, batch_size: int) -> None:
    """Give the calibrator's collector, before any shard, each tensor's histogram over its
    range on every row, empty. onnxruntime bins a tensor's values over (-t, t), t the largest
    magnitude it has seen; a later shard with larger values would rebin with the first
    shard's bin width, and the ranges would differ from one histogram of all rows (on the
    default task by up to 13% of a range's width, -0.7 to +0.3 points of accuracy). Seeded
    with every row's t, each shard's counts fall in the bins one histogram of all rows has,
    and add up to it exactly. The price: one more inference pass, a shard at a time."""
    from onnxruntime.quantization.calibrate import HistogramCollector
    from optimum.onnxruntime.quantization import ORTCalibrationDataReader

    session = calibrator.infer_session
    names = [output.name for output in session.get_outputs()]
    wanted = set(calibrator.tensors_to_calibrate)
    low: dict[str, np.ndarray] = {}
    high: dict[str, np.ndarray] = {}
    for rows in shards:
        reader = ORTCalibrationDataReader(rows, batch_size)
        while inputs := reader.get_next():
            for name, value in zip(names, session.run(None, inputs), strict=True):
                if name in wanted and value.size:
                    lowest, highest = np.nanmin(value), np.nanmax(value)
                    low[name] = min(low.get(name, lowest), lowest)
                    high[name] = max(high.get(name, highest), highest)
    collector = HistogramCollector(
        method=calibrator.method,
        symmetric=calibrator.symmetric,
        num_bins=calibrator.num_bins,
        num_quantized_bins=calibrator.num_quantized_bins,
        percentile=calibrator.percentile,
        scenario=calibrator.scenario,
    )
    for name, lowest in low.items():
        dtype = np.asarray(lowest).dtype
        threshold = np.array(max(abs(lowest), abs(high[name])), dtype=dtype)
        hist, edges = np.histogram(
            np.zeros(0, dtype=dtype), calibrator.num_bins, range=(-threshold, threshold)
        )
        empty_min, empty_max = np.array(np.inf, dtype=dtype), np.array(-np.inf, dtype=dtype)
        collector.histogram_dict[name] = (hist, edges, empty_min, empty_max, threshold)
    calibrator.collector = collector
