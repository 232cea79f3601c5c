"""Speed: paired, interleaved timing of a candidate against the fp32 baseline on one worker
(settings, results and the pieces of the one timing loop, `search.interleave`).

Both models run on the same real batches, alternating which goes first (ABBA), so slow drifts
of the machine hit both alike. Pairs are grouped in blocks; the speedup is the geometric mean
of the pair ratios and its 95% interval comes from the spread between blocks (`search.stats`),
never narrower than the run-to-run drift floor. Timing stops as soon as the blocks' own
interval is tight enough (`target`: more timing would only shrink that part), when the
time budget ends, or (racing, `race_below`) as soon as the honest interval's upper bound
falls below the speed the config would need to reach the frontier at its accuracy: more
timing could not put it there. A raced interval is computed exactly as any other, from fewer
blocks, so it is only wider.

`seconds` bounds the whole measurement, warm-up included, whatever one pair costs: blocks are
sized from the first pair's time so that `min_blocks` of them fit in what is left (never more
pairs than `block_pairs`), and after every block from the second on timing stops when one
more block, at the mean block time so far, would end past the budget, so a measurement ends
within it unless its last block ran longer than the mean (benchmarks/model_size.py shows it on
a BERT-base-size model). Where one pair costs about the whole budget (that model on a slow
CPU: 14-15 s a pair on an AMD Zen 1 against a 12 s budget), two blocks cannot end within one
block of it: timing stops after the first block once the budget is spent, and the estimate
of one block carries the drift floor doubled, as a loaded run's does; the confirmation's
rounds add the blocks that give a frontier config its real interval.

Other processes' CPU use is read from /proc/stat during every block. Blocks measured while
another process held more than `load_threshold` of a core are left out of the estimate when
enough clean blocks remain (timing goes on to get them); otherwise all blocks are used, the
interval is doubled, and the measurement is flagged as loaded. It is never silently trusted.

Every process that times fixes glibc's mmap threshold first (`steady_allocator`): otherwise
where a session's large buffers land depends on what the process allocated and freed before
(see that function), and a long-lived trial process reads speeds a fresh one does not.
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from search.stats import Estimate, Spread, block_estimate
from search.tasks.base import Batch

OBJECTIVES = ("throughput", "latency")


@dataclass(frozen=True)
class TimingSettings:
    """How speed is measured; recorded with every trial."""

    seconds: float = 12.0  # most time per measurement, warm-up included (see the docstring)
    target: float = 0.02  # stop once the interval's relative half-width is at most this
    block_pairs: int = 3  # pairs per block (latency: x8, single examples are short)
    min_blocks: int = 4
    # Untimed runs of the candidate before timing (and of the baseline, unless it is already
    # warm). benchmarks/trial_cost.py --warmup (5 fresh sessions x 8 runs of one batch): the
    # first run is 1.02x (fp32) and 1.04x (int8) the later runs' median, within their spread;
    # one run is kept as insurance against lazy allocation.
    warmup_runs: int = 1
    threads: int = 1  # intra-op threads of every session
    # Smallest relative half-width of the interval: the run-to-run drift that one run cannot
    # see. Measured by benchmarks/measurement_stability.py on an AVX2 EPYC VM: separate
    # paired runs of one config spread with a CV of 2.5-3.3% while each run's block interval
    # was +-1-2%; with this floor 90%+ of intervals cover the median of all runs.
    floor: float = 0.05
    load_threshold: float = 0.3  # other processes' CPU use, in cores, that flags a block
    objective: str = "throughput"  # or "latency": batch size 1, p50 ratio

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Speedup:
    ratio: float  # baseline time / candidate time (geometric mean over pairs)
    low: float  # 95% interval
    high: float
    pairs: int
    blocks: int
    baseline_sps: float  # samples per second
    candidate_sps: float
    seconds: float  # timing spent, warm-up excluded
    stopped: str  # "target", "budget", "raced"
    other_load: float  # mean CPU use of other processes during timing, in cores
    loaded: bool  # some blocks ran under load: see the module docstring
    loaded_blocks: int
    baseline_p50_ms: float
    baseline_p90_ms: float
    candidate_p50_ms: float
    candidate_p90_ms: float
    race_below: float | None = None  # the frontier's speed at this accuracy, when racing
    warmup_seconds: float = 0.0  # untimed runs before timing (inside the budget)
    block_size: int = 0  # pairs per block, sized from the first pair's time
    block_logs: tuple[float, ...] = ()  # each block's log ratio, in order
    spread_df: int = 0  # degrees of freedom of block spread lent by earlier timings

    @property
    def rel_half_width(self) -> float:
        return (self.high - self.low) / (2 * self.ratio)

    def to_dict(self) -> dict:
        out = {k: round(v, 5) if isinstance(v, float) else v for k, v in asdict(self).items()}
        out["block_logs"] = [round(x, 6) for x in self.block_logs]
        return out


CLOCK_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100  # /proc/stat's unit


def cpu_ticks() -> list[int] | None:
    """The machine's CPU time so far, all CPUs together, in `CLOCK_TICK`s, as the kernel
    splits it (`/proc/stat`'s first line: user, nice, system, idle, iowait, irq, softirq,
    steal, ...); None where the kernel does not tell."""
    try:
        return [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, IndexError, ValueError):
        return None


class LoadProbe:
    """CPU time used by other processes between `start` and `stop`, in cores."""

    def __init__(self) -> None:
        self._start: tuple[float, float, float] | None = None

    def _busy_seconds(self) -> float | None:
        values = cpu_ticks()
        if values is None:
            return None
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        return (sum(values[:8]) - idle) / CLOCK_TICK

    def start(self) -> None:
        self._start = (time.perf_counter(), time.process_time(), self._busy_seconds() or 0.0)

    def stop(self) -> float:
        if self._start is None:
            return 0.0
        wall0, own0, busy0 = self._start
        busy = self._busy_seconds()
        if busy is None:
            return 0.0
        wall = max(time.perf_counter() - wall0, 1e-9)
        own = time.process_time() - own0
        return max(0.0, (busy - busy0 - own) / wall)


M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)
MMAP_THRESHOLD = 128 * 1024  # glibc's own starting value


@functools.cache
def steady_allocator() -> bool:
    """Fix glibc's mmap threshold at its starting 128 KiB, for the rest of the process: every
    allocation above it (session arenas, prepacked weights) is then a fresh page-aligned
    mapping, whatever the process did before. True where it was set (glibc), else False.

    Why: glibc raises the threshold each time it frees a mapped block (up to 32 MiB), so in a
    process that has quantized, calibrated and scored for a while the same session's buffers
    come from a fragmented heap at other offsets, and fp32 and int8 sessions are not slowed
    alike. benchmarks/confirm_process.py on an AMD EPYC Zen 5 (5 rounds x 10 s, aged and
    fresh children in the same minutes): the search's child after 6 trials read speedups
    4.1% [0.3, 8.0] above fresh children (fp32 0.904x as fast, int8 0.942x); with the
    threshold fixed, 0.994 [0.981, 1.006] (fp32 0.965x, int8 0.959x: alike). On a 2-core
    Intel Xeon the same child had read them ~6% low (issue 14). Setting the threshold also
    stops glibc's dynamic trim threshold."""
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc: nothing to fix
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))


def make_session(model_path: Path, options=None):
    import onnxruntime as ort

    from search.config import make_session_options

    return ort.InferenceSession(
        str(model_path),
        sess_options=options or make_session_options(),
        providers=["CPUExecutionProvider"],
    )


def timed_run(session, batch: Batch, clock: Callable[[], float]) -> float:
    start = clock()
    session.run(None, batch.inputs)
    return clock() - start


def lend_spread(spread: dict[int, Spread], speed: Speedup | None) -> None:
    """Add a timing's blocks to a worker's spread (`lend_blocks`)."""
    if speed is not None:
        lend_blocks(spread, speed.block_size, speed.block_logs, speed.loaded)


def lend_blocks(
    spread: dict[int, Spread], block_size: int, block_logs: Sequence[float], loaded: bool
) -> None:
    """Add one timing's block log ratios to a spread, per pairs per block
    (`search.stats.Spread`); none under load (their spread is the other process's), none
    from a single block (no spread to read). The one rule for a worker's own timings and
    for those a study records (`search.context`)."""
    if not loaded and len(block_logs) > 1:
        spread[block_size] = spread.get(block_size, Spread()).add(block_logs)


def estimate_blocks(
    logs: Sequence[float],
    loads: Sequence[float],
    settings: TimingSettings,
    floor: bool = True,
    prior: Spread | None = None,
) -> tuple[Estimate, int]:
    """The estimate from clean blocks if there are enough, else from all, widened. One block
    (a budget that held no more, see the module docstring) has no spread to read: its
    interval is the drift floor, doubled. Without `floor`, the interval is the blocks' own
    (what more timing can still shrink; infinite for one block). `prior`: block spread lent
    by the worker's earlier timings (`search.stats.Spread`)."""
    clean = [x for x, load in zip(logs, loads, strict=True) if load <= settings.load_threshold]
    loaded = len(logs) - len(clean)
    drift = settings.floor if floor else 0.0
    if len(clean) >= max(2, settings.min_blocks):
        return block_estimate(clean, drift, prior), loaded
    est = block_estimate(logs, drift, prior)
    if len(logs) == 1:  # no spread between blocks to read: the floor, doubled
        half = 2 * math.log1p(drift) if drift else math.inf
    elif loaded:
        half = math.log(est.high / est.ratio)
    else:
        return est, loaded
    if loaded:
        half *= 2
    low, high = est.ratio * math.exp(-half), est.ratio * math.exp(half)
    return Estimate(est.ratio, low, high, est.blocks), loaded


def timing_result(
    logs: Sequence[float],
    loads: Sequence[float],
    base_t: Sequence[float],
    cand_t: Sequence[float],
    samples: int,
    settings: TimingSettings,
    *,
    seconds: float,
    stopped: str,
    warmup: float,
    block_size: int,
    race_below: float | None = None,
    prior: Spread | None = None,
) -> Speedup:
    """One candidate's `Speedup` from its blocks' log ratios, their loads and every pair's
    times: the one place a timing run becomes an estimate (`search.interleave`)."""
    est, loaded = estimate_blocks(logs, loads, settings, prior=prior)
    base = np.asarray(base_t)
    cand = np.asarray(cand_t)
    return Speedup(
        ratio=est.ratio,
        low=est.low,
        high=est.high,
        pairs=len(base),
        blocks=len(logs),
        baseline_sps=samples / max(float(base.sum()), 1e-12),
        candidate_sps=samples / max(float(cand.sum()), 1e-12),
        seconds=seconds,
        stopped=stopped,
        other_load=float(np.mean(loads)),
        loaded=loaded > 0,
        loaded_blocks=loaded,
        baseline_p50_ms=1000 * float(np.percentile(base, 50)),
        baseline_p90_ms=1000 * float(np.percentile(base, 90)),
        candidate_p50_ms=1000 * float(np.percentile(cand, 50)),
        candidate_p90_ms=1000 * float(np.percentile(cand, 90)),
        race_below=race_below,
        warmup_seconds=warmup,
        block_size=block_size,
        block_logs=tuple(float(x) for x in logs),
        spread_df=prior.df if prior is not None and len(logs) > 1 else 0,
    )


def block_statistic(
    base_t: Sequence[float], cand_t: Sequence[float], settings: TimingSettings
) -> float:
    """A block's log ratio from its pairs: the mean of the pair log ratios (throughput) or
    the log ratio of the median latencies (latency)."""
    if settings.objective == "latency":
        b_med, c_med = float(np.median(base_t)), float(np.median(cand_t))
        return math.log(b_med / c_med) if b_med > 0 and c_med > 0 else 0.0
    return float(
        np.mean(
            [
                math.log(b / c) if b > 0 and c > 0 else 0.0
                for b, c in zip(base_t, cand_t, strict=True)
            ]
        )
    )


def block_size(settings: TimingSettings, most: int, pair_seconds: float, left: float) -> int:
    """Pairs per block such that `min_blocks` blocks fit in the `left` seconds of the
    budget (at least one pair, at most `most`): on a small model this is `most`; on a model
    whose pair takes seconds, one pair per block, so the budget still holds."""
    if pair_seconds <= 0:
        return most
    fit = int(left / (settings.min_blocks * pair_seconds))
    return max(1, min(most, fit))
