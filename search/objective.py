"""One trial, end to end: quantize, check it loads, score accuracy, time it against fp32.

Anything that goes wrong inside the quantizer or onnxruntime becomes a `TrialError` with the
library's reason; the runner records it as a FAIL trial and the search goes on.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search.calibrate import CalibrationCache
from search.config import QuantConfig, make_session_options
from search.errors import TrialError
from search.measure import Speedup, TimingSettings, make_session, paired_speedup
from search.metrics import LABEL_METRICS
from search.quantize import quantize
from search.stats import paired_accuracy_difference
from search.tasks.base import TextClassificationTask
from search.worker import worker_info


@dataclass
class TrialResult:
    accuracy: float
    speedup: float
    attrs: dict[str, Any] = field(default_factory=dict)


class Evaluator:
    """Holds what a run computes once: the fp32 session, its accuracy, calibration ranges,
    and fp32's speed under each set of session options."""

    def __init__(
        self,
        task: TextClassificationTask,
        timing: TimingSettings | None = None,
        workdir: Path | None = None,
    ) -> None:
        self.task = task
        self.timing = timing or TimingSettings()
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="qsearch-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.calibration = CalibrationCache(task)
        self._baseline = None
        self._fp32_outputs = None
        self._options_gain: dict[tuple, Speedup] = {}
        self.fp32_size_mb = task.model_path.stat().st_size / 1e6

    @property
    def baseline(self):
        """fp32 with onnxruntime's default session options: the reference for every speedup."""
        if self._baseline is None:
            self._baseline = make_session(
                self.task.model_path, make_session_options(threads=self.timing.threads)
            )
        return self._baseline

    @property
    def fp32_outputs(self):
        """fp32's outputs on the evaluation set, once: the reference of fidelity metrics."""
        if self._fp32_outputs is None:
            self._fp32_outputs = self.task.outputs(self.baseline)
        return self._fp32_outputs

    @property
    def fp32_accuracy(self) -> float:
        """fp32's score on the task's metric (1.0 for fidelity metrics, by definition)."""
        return self.task.score(self.fp32_outputs, self.fp32_outputs)

    @property
    def timing_batches(self):
        if self.timing.objective == "latency":
            return self.task.latency_batches
        return self.task.timing_batches

    def accuracy_difference(self, outputs) -> dict:
        """Paired difference from fp32 on the same examples (label metrics only)."""
        refs = self.task.eval_references
        if self.task.metric not in LABEL_METRICS or refs is None:
            return {}
        d = paired_accuracy_difference(
            outputs.argmax(-1) == refs, self.fp32_outputs.argmax(-1) == refs
        )
        return {
            "accuracy_diff": d.diff,
            "accuracy_diff_low": d.low,
            "accuracy_diff_high": d.high,
            "mcnemar_p": d.mcnemar_p,
            "discordant_examples": d.discordant,
        }

    def options_gain(self, config: QuantConfig) -> Speedup | None:
        """fp32's own speedup under the candidate's session options (None for the defaults):
        the share of a trial's speedup owed to the options rather than to quantization."""
        key = config.session_key()
        if key == ("all", ()):
            return None
        if key not in self._options_gain:
            session = make_session(
                self.task.model_path, config.session_options(self.timing.threads)
            )
            self._options_gain[key] = paired_speedup(
                self.baseline, session, self.timing_batches, self.timing
            )
        return self._options_gain[key]

    def _load(self, config: QuantConfig, out: Path, phases: dict[str, float]):
        """Calibrate, quantize and load `config`: (session, model size in MB)."""
        t = time.perf_counter()
        try:
            ranges = self.calibration.ranges(config)
        except TrialError:
            raise
        except Exception as exc:  # noqa: BLE001 - any library failure fails the trial only
            raise TrialError(f"calibration ({config.calibration}) failed: {_reason(exc)}") from exc
        phases["calibrate"] = time.perf_counter() - t
        t = time.perf_counter()
        try:
            path = quantize(config, self.task.model_path, out, ranges)
        except Exception as exc:  # noqa: BLE001
            raise TrialError(f"quantization failed: {_reason(exc)}") from exc
        phases["quantize"] = time.perf_counter() - t
        try:
            session = make_session(path, config.session_options(self.timing.threads))
        except Exception as exc:  # noqa: BLE001
            raise TrialError(f"onnxruntime could not load the model: {_reason(exc)}") from exc
        return session, path.stat().st_size / 1e6

    def retime(self, config: QuantConfig) -> Speedup:
        """A fresh, independent speed measurement of `config` (confirmation, `measure`)."""
        out = Path(tempfile.mkdtemp(prefix="retime-", dir=self.workdir))
        try:
            session, _ = self._load(config, out, {})
            return paired_speedup(self.baseline, session, self.timing_batches, self.timing)
        finally:
            shutil.rmtree(out, ignore_errors=True)

    def evaluate(self, config: QuantConfig) -> TrialResult:
        started = time.perf_counter()
        phases: dict[str, float] = {}
        out = Path(tempfile.mkdtemp(prefix="trial-", dir=self.workdir))
        try:
            session, size_mb = self._load(config, out, phases)
            t = time.perf_counter()
            try:
                outputs = self.task.outputs(session)
                accuracy = self.task.score(outputs, self.fp32_outputs)
            except TrialError:
                raise
            except Exception as exc:  # noqa: BLE001
                raise TrialError(f"onnxruntime failed running the model: {_reason(exc)}") from exc
            phases["accuracy"] = time.perf_counter() - t
            if not math.isfinite(accuracy):
                raise TrialError(f"accuracy is {accuracy}")
            t = time.perf_counter()
            speed = paired_speedup(self.baseline, session, self.timing_batches, self.timing)
            gain = self.options_gain(config)
            phases["timing"] = time.perf_counter() - t
            if not math.isfinite(speed.ratio) or speed.ratio <= 0:
                raise TrialError(f"speedup is {speed.ratio}")
            attrs = {
                "config": config.to_dict(),
                "config_key": config.key,
                "description": config.describe(),
                "accuracy_fp32": self.fp32_accuracy,
                "accuracy_drop": self.fp32_accuracy - accuracy,
                "speedup_low": speed.low,
                "speedup_high": speed.high,
                "timing": speed.to_dict(),
                "loaded": speed.loaded,
                **self.accuracy_difference(outputs),
                "fp32_options_speedup": gain.ratio if gain else 1.0,
                "model_size_mb": round(size_mb, 3),
                "model_size_fp32_mb": round(self.fp32_size_mb, 3),
                "phase_seconds": {k: round(v, 3) for k, v in phases.items()},
                "wall_seconds": round(time.perf_counter() - started, 3),
                "worker": worker_info(self.timing.threads),
                "timing_settings": self.timing.to_dict(),
            }
            return TrialResult(accuracy=accuracy, speedup=speed.ratio, attrs=attrs)
        finally:
            shutil.rmtree(out, ignore_errors=True)

    def close(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first[:500]}"
