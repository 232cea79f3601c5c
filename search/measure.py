"""Speed: paired, interleaved timing of a candidate against the fp32 baseline on one worker.

Both models run on the same real batches, alternating (ABBA order), so slow drifts of the
machine hit both alike; the speedup is the median of per-pair time ratios, with a bootstrap
95% interval. This is the first version: the stable-throughput issue widens the interval to
hold across runs and adds load detection.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from search.tasks.base import Batch


@dataclass(frozen=True)
class TimingSettings:
    """How speed is measured; recorded with every trial."""

    seconds: float = 6.0  # interleaved timing budget per trial, after warm-up
    warmup_runs: int = 2  # untimed runs of each model (on the first batches) before timing
    min_pairs: int = 6
    threads: int = 1  # intra-op threads of every session

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Speedup:
    ratio: float  # median of baseline_time / candidate_time over pairs
    low: float  # bootstrap 95% interval of that median
    high: float
    pairs: int
    baseline_sps: float  # samples per second
    candidate_sps: float

    def to_dict(self) -> dict:
        return {k: round(v, 5) if isinstance(v, float) else v for k, v in asdict(self).items()}


def make_session(model_path: Path, options=None):
    import onnxruntime as ort

    from search.config import make_session_options

    return ort.InferenceSession(
        str(model_path),
        sess_options=options or make_session_options(),
        providers=["CPUExecutionProvider"],
    )


def _run_seconds(session, batch: Batch) -> float:
    start = time.perf_counter()
    session.run(None, batch.inputs)
    return time.perf_counter() - start


def bootstrap_median(
    values: np.ndarray, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the median."""
    if len(values) < 2:
        v = float(values[0]) if len(values) else float("nan")
        return v, v
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), size=(resamples, len(values)))
    medians = np.median(values[idx], axis=1)
    return float(np.percentile(medians, 2.5)), float(np.percentile(medians, 97.5))


def paired_speedup(
    baseline, candidate, batches: Sequence[Batch], settings: TimingSettings
) -> Speedup:
    """Speedup of `candidate` over `baseline`: interleaved runs on the same batches."""
    for i in range(settings.warmup_runs):
        batch = batches[i % len(batches)]
        baseline.run(None, batch.inputs)
        candidate.run(None, batch.inputs)
    base_t: list[float] = []
    cand_t: list[float] = []
    samples = 0
    deadline = time.perf_counter() + settings.seconds
    i = 0
    while time.perf_counter() < deadline or len(base_t) < settings.min_pairs:
        batch = batches[i % len(batches)]
        if i % 2 == 0:  # ABBA: alternate which model runs first
            b = _run_seconds(baseline, batch)
            c = _run_seconds(candidate, batch)
        else:
            c = _run_seconds(candidate, batch)
            b = _run_seconds(baseline, batch)
        base_t.append(b)
        cand_t.append(c)
        samples += len(batch)
        i += 1
    base = np.asarray(base_t)
    cand = np.asarray(cand_t)
    ratios = base / cand
    low, high = bootstrap_median(ratios)
    return Speedup(
        ratio=float(np.median(ratios)),
        low=low,
        high=high,
        pairs=len(ratios),
        baseline_sps=samples / float(base.sum()),
        candidate_sps=samples / float(cand.sum()),
    )
