"""One trial, end to end: quantize, check it loads, score accuracy, time it against fp32.

Anything that goes wrong inside the quantizer or onnxruntime becomes a `TrialError` with the
library's reason; the runner records it as a FAIL trial and the search goes on.

A trial is answered as cheaply as the evidence allows (`search.early`): a quantized graph
already measured in the study is copied (`SameGraph`), a config whose metric provably cannot
reach `fp32 - prune drop` stops after a slice of the evaluation set (`TrialPruned`), and
timing stops once the config provably cannot reach the frontier at its accuracy (racing).
Where scoring costs more than timing (a BERT-base-size model), the config is timed after the
first slice and the rest is scored only while it can still reach the frontier.
Scoring and its pruning are `search.scoring`'s; this module runs the phases in order and owns
the timing against fp32.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search.calibrate import CalibrationCache
from search.config import QuantConfig, make_session_options
from search.context import TrialContext
from search.early import PruneSettings, decided, dominated, race_bar
from search.errors import SameGraph, TrialError, TrialPruned, failure_reason
from search.interleave import interleaved_speedups, paired_speedup
from search.measure import (
    Speedup,
    TimingSettings,
    lend_spread,
    make_session,
    steady_allocator,
)
from search.model_files import file_sha256
from search.quantize import quantize
from search.retime import Retiming
from search.scoring import Scorer
from search.stats import Spread
from search.tasks.base import TextClassificationTask
from search.worker import worker_info

DEFAULT_SESSION = ("all", ())  # QuantConfig.session_key() of the default session options


@dataclass
class TrialResult:
    accuracy: float
    speedup: float
    attrs: dict[str, Any] = field(default_factory=dict)


class Evaluator(Retiming):
    """Holds what a run computes once: the fp32 session, its accuracy, calibration ranges,
    and fp32's speed under each set of session options."""

    def __init__(
        self,
        task: TextClassificationTask,
        timing: TimingSettings | None = None,
        workdir: Path | None = None,
        prune: PruneSettings | None = None,
        scoring_threads: int | None = None,
    ) -> None:
        # Before any session: where its buffers land must not depend on the process's past.
        self.steady_allocator = steady_allocator()
        self.task = task
        self.timing = timing or TimingSettings()
        self.prune = prune or PruneSettings()
        self.scorer = Scorer(task, self.prune, scoring_threads)
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="qsearch-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.calibration = CalibrationCache(task)
        self._baseline = None
        self._baseline_warm = False
        self._options_gain: dict[tuple, Speedup | None] = {}
        self._baseline_seconds: float | None = None  # fp32's median batch in the last timing
        # confirmation rounds' open sessions: (session, its folder, its model file)
        self._rounds: dict[str, tuple[Any, Path, Path]] = {}
        self._round_batch: dict[str, int] = {}  # and where each one's next pair starts
        self.fp32_size_mb = task.model_path.stat().st_size / 1e6
        # block spread of this worker's trial timings so far, per pairs per block: lent to
        # the next trial's interval and race (`search.stats.Spread`); a trial's context
        # replaces it with the study's record of this host's timings (`search.context`)
        self.spread: dict[int, Spread] = {}

    @property
    def baseline(self):
        """fp32 with onnxruntime's default session options: the reference for every speedup."""
        if self._baseline is None:
            self._baseline = make_session(
                self.task.model_path, make_session_options(threads=self.timing.threads)
            )
        return self._baseline

    @property
    def scoring_threads(self) -> int:
        return self.scorer.threads

    @property
    def fp32_outputs(self):
        return self.scorer.fp32_outputs

    @property
    def fp32_accuracy(self) -> float:
        return self.scorer.fp32_accuracy

    @property
    def timing_batches(self):
        if self.timing.objective == "latency":
            return self.task.latency_batches
        return self.task.timing_batches

    def _warm_baseline(self) -> None:
        """fp32's untimed warm-up runs, once per worker: they prepare the worker's reference,
        not any one trial's measurement, so no trial's budget pays for them."""
        if self._baseline_warm:
            return
        batches = self.timing_batches
        for i in range(self.timing.warmup_runs):
            begun = time.perf_counter()
            self.baseline.run(None, batches[i % len(batches)].inputs)
            # what the budget's first estimates take fp32's run to cost (search.interleave)
            self._baseline_seconds = time.perf_counter() - begun
        self._baseline_warm = True

    def _speedup(self, candidate, timing: TimingSettings, race_below: float | None = None):
        """`paired_speedup` against this worker's fp32 session, warmed up once per run."""
        speed = paired_speedup(
            self.baseline,
            candidate,
            self.timing_batches,
            timing,
            race_below=race_below,
            baseline_warm=self._baseline_warm,
            priors=self.spread,
        )
        self._baseline_warm = True
        self._baseline_seconds = speed.baseline_p50_ms / 1000
        self._lend(speed)
        return speed

    def _lend(self, *speeds: Speedup | None) -> None:
        for speed in speeds:
            lend_spread(self.spread, speed)

    def _timing_phase(self, config: QuantConfig, session, race_below: float | None):
        """The candidate's speedup and its options' gain (fp32's own speedup under the
        candidate's session options: the share owed to the options, not to quantization;
        None for the defaults, or where it was not measured) within one `--timing-seconds`.
        A gain not measured yet (once per set of options) is timed in the same run as the
        candidate, the two taking turns a block at a time (`search.interleave`), so the phase
        is one measurement, which ends within the budget but for one block. Where the budget
        cannot hold two blocks of each (a BERT-base-size model on a slow CPU: a pair of fp32
        runs takes ~5 s), the candidate alone is timed and the gain stays unmeasured for
        these options: the trial's own speedup is what the budget must hold."""
        key = config.session_key()
        if key == DEFAULT_SESSION or key in self._options_gain:
            gain = self._options_gain.get(key)
            return self._speedup(session, self.timing, race_below=race_below), gain
        fp32 = make_session(self.task.model_path, config.session_options(self.timing.threads))
        gain, speed = interleaved_speedups(
            self.baseline,
            [fp32, session],
            self.timing_batches,
            self.timing,
            baseline_warm=self._baseline_warm,
            race_below=(None, race_below),
            optional=(True, False),
            baseline_seconds=self._baseline_seconds,
            priors=self.spread,
        )
        self._baseline_warm = True
        if isinstance(speed, str):
            raise TrialError(speed)
        if isinstance(gain, str):
            raise TrialError(f"fp32 under these session options: {gain}")
        self._lend(speed, gain)
        self._baseline_seconds = speed.baseline_p50_ms / 1000
        self._options_gain[key] = gain  # None: not measured, and not tried again
        return speed, gain

    def _quantize(self, config: QuantConfig, out: Path, phases: dict[str, float]) -> Path:
        """Calibrate (cached ranges) and quantize `config`: the quantized file."""
        t = time.perf_counter()
        try:
            ranges = self.calibration.ranges(config)
        except TrialError:
            raise
        except Exception as exc:  # noqa: BLE001 - any library failure fails the trial only
            raise TrialError(
                f"calibration ({config.calibration}) failed: {failure_reason(exc)}"
            ) from exc
        phases["calibrate"] = time.perf_counter() - t
        t = time.perf_counter()
        try:
            smoothed = self.calibration.smoothed(config)
            path = quantize(config, self.task.model_path, out, ranges, smoothed)
        except Exception as exc:  # noqa: BLE001
            raise TrialError(f"quantization failed: {failure_reason(exc)}") from exc
        phases["quantize"] = time.perf_counter() - t
        return path

    def _open(self, config: QuantConfig, path: Path, threads: int | None = None):
        try:
            return make_session(path, config.session_options(threads or self.timing.threads))
        except Exception as exc:  # noqa: BLE001
            raise TrialError(
                f"onnxruntime could not load the model: {failure_reason(exc)}"
            ) from exc

    def graph_key(self, config: QuantConfig, graph_sha256: str) -> str:
        """The quantized file, the session options and the timing that run it: trials with
        equal keys measure the same thing. (Quantizing one config twice writes identical
        bytes, checked by the tests, so the file's own hash is the graph's.)"""
        graph_optimization, fusions = config.session_key()
        text = json.dumps(
            [graph_sha256, graph_optimization, list(fusions), self.timing.threads]
            + [self.timing.objective]
        )
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def _time_first(self, progress) -> bool:
        """Whether to time the config before scoring the rest of the evaluation set: where
        the rest would cost more than `prune.time_first` timing budgets, and an interim look
        bounds the metric (`search.early`)."""
        share = self.prune.time_first
        return (
            self.prune.race
            and share is not None
            and not progress.complete
            and bool(progress.looks)
            and progress.rest_seconds() > share * self.timing.seconds
        )

    def _settled(self, frontier, look: dict, speed: Speedup) -> dict | None:
        """Why a config timed first needs no more examples: the frontier dominates it at its
        metric's ceiling, or whether it is within --max-drop is decided (`search.early`)."""
        return dominated(frontier, look, speed.high) or decided(look, self.prune.max_drop)

    def evaluate(self, config: QuantConfig, context: TrialContext | None = None) -> TrialResult:
        """Measure `config`. Raises `SameGraph` when its graph is in `context.known_graphs`,
        `TrialPruned` when its metric cannot reach the threshold, `TrialError` on failure."""
        context = context or TrialContext()
        if context.spread:  # the study's record of this host's timings, this worker's included
            self.spread = dict(context.spread)
        started = time.perf_counter()
        phases: dict[str, float] = {}
        attrs: dict[str, Any] = {
            "config": config.to_dict(),
            "config_key": config.key,
            "description": config.describe(),
            "phase_seconds": phases,
            # Before anything can fail: a failed trial says which CPU it failed on, too.
            "worker": worker_info(self.timing.threads),
        }
        out = Path(tempfile.mkdtemp(prefix="trial-", dir=self.workdir))
        try:
            path = self._quantize(config, out, phases)
            attrs["graph_sha256"] = file_sha256(path)
            attrs["graph_key"] = self.graph_key(config, attrs["graph_sha256"])
            attrs["model_size_mb"] = round(path.stat().st_size / 1e6, 3)
            if attrs["graph_key"] in context.known_graphs:
                _close(attrs, started)
                raise SameGraph(context.known_graphs[attrs["graph_key"]], attrs)
            attrs |= {
                "accuracy_fp32": self.fp32_accuracy,
                "prune_settings": self.prune.to_dict(),
                "timing_settings": self.timing.to_dict(),
                "scoring_threads": self.scoring_threads,
            }
            t = time.perf_counter()
            # The timing session is opened only once the metric is in, or its first slice where
            # the rest costs more than the timing (`_time_first`): a pruned trial needs none.
            scoring = self._open(config, path, self.scoring_threads)
            progress = self.scorer.begin(scoring, attrs)
            try:
                self.scorer.advance(progress, until=1)
                time_first = self._time_first(progress)
                if not time_first:
                    self.scorer.advance(progress)
            except TrialPruned:
                phases["accuracy"] = time.perf_counter() - t
                _close(attrs, started)
                raise
            phases["accuracy"] = time.perf_counter() - t
            t = time.perf_counter()
            same_threads = self.scoring_threads == self.timing.threads
            if not (time_first or same_threads):
                scoring = progress.session = None  # scored: one model in memory at a time
            session = progress.session if same_threads else self._open(config, path)
            self._warm_baseline()
            # Loading the timing session is not timing, nor is fp32's first warm-up (the
            # worker's, once): --timing-seconds bounds what follows (a BERT-base-size session
            # takes ~1 s to load at one thread, and its fp32 run seconds on a slow CPU).
            phases["load"] = time.perf_counter() - t
            t = time.perf_counter()
            frontier = (*context.frontier, (self.fp32_accuracy, 1.0))
            # Timed before the rest is scored, it races at the most its metric could be.
            reach = progress.looks[-1]["metric_ceiling"] if time_first else progress.metric
            bar = race_bar(frontier, reach) if self.prune.race else None
            speed, gain = self._timing_phase(config, session, bar)
            phases["timing"] = time.perf_counter() - t
            if time_first:
                attrs["scored_after_timing"] = True
                t = time.perf_counter()
                try:
                    self.scorer.advance(
                        progress, stop=lambda look: self._settled(frontier, look, speed)
                    )
                except TrialPruned:
                    phases["accuracy"] += time.perf_counter() - t
                    _close(attrs, started)
                    raise
                phases["accuracy"] += time.perf_counter() - t
            del scoring, session
            outputs, accuracy, looks = self.scorer.result(progress)
            if progress.stopped is not None:
                attrs["scoring_stopped"] = progress.stopped
                attrs["accuracy_examples"] = progress.stopped["examples_seen"]
            if not math.isfinite(speed.ratio) or speed.ratio <= 0:
                raise TrialError(f"speedup is {speed.ratio}")
            attrs |= {
                "accuracy_drop": self.fp32_accuracy - accuracy,
                "accuracy_looks": looks,
                "speedup_low": speed.low,
                "speedup_high": speed.high,
                "timing": speed.to_dict(),
                "loaded": speed.loaded,
                **self.scorer.accuracy_difference(outputs),
                "fp32_options_speedup": _options_speedup(config, gain),
                "model_size_fp32_mb": round(self.fp32_size_mb, 3),
            }
            _close(attrs, started)
            return TrialResult(accuracy=accuracy, speedup=speed.ratio, attrs=attrs)
        except TrialError as exc:
            exc.attrs = {k: attrs[k] for k in ("graph_sha256", "graph_key", "worker") if k in attrs}
            raise
        finally:
            shutil.rmtree(out, ignore_errors=True)

    def close(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


def _options_speedup(config: QuantConfig, gain: Speedup | None) -> float | None:
    """fp32's speedup under the config's session options: 1 for the defaults, None where
    the budget could not hold its measurement."""
    if gain is not None:
        return gain.ratio
    return 1.0 if config.session_key() == DEFAULT_SESSION else None


def _close(attrs: dict, started: float) -> None:
    """Round the phase times and stamp the wall time: the attributes are final."""
    attrs["phase_seconds"] = {k: round(v, 3) for k, v in attrs["phase_seconds"].items()}
    attrs["wall_seconds"] = round(time.perf_counter() - started, 3)
