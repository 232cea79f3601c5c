"""Several candidates timed against one baseline in one run, interleaved block by block: a
confirmation round (`Evaluator.retime_round`), and a trial's first measurement under new
session options (fp32 under them and the candidate, `Evaluator._timing_phase`).

Why: a round that times candidate A against fp32 for its seconds, then B for its own, leaves
the machine's drift between those seconds in the ratio of A to B. Here the candidates take
turns a block at a time (a few pairs, a fraction of a second): A's block, B's block, C's,
A's again, ..., each block `paired_speedup`'s own ABBA pairs against fp32 on the same
batches, so a drift of the seconds hits every candidate alike, while every pair is measured
exactly as a trial's are (the same cache regime: each model follows itself or fp32), and the
blocks pool with the trial's.

A first design ran fp32 and every candidate once per batch, in an order rotated one place per
batch: there a candidate always ran after another model, never after itself, so it read
2-4% below its trial, and which model it followed (fixed by the rotation) biased the ratios
between candidates (benchmarks/confirmation.py on an AMD EPYC Zen 4: see the README).

Blocks, loads, the budget (warm-up included; checked before every block once each candidate
has two, so a run ends at most one block past it) and the estimate are `search.measure`'s.
Where one block of each already ends past the budget (a pair of a BERT-base-size model on a
slow CPU takes longer than the whole budget), the run stops there, with one block each: a
second would end more than one block past it.
`paired_speedup`, a trial's own timing, is this run with one candidate: one timing loop
serves trials, confirmation rounds and `qsearch measure` alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from search.measure import (
    LoadProbe,
    Speedup,
    TimingSettings,
    block_size,
    block_statistic,
    estimate_blocks,
    timed_run,
    timing_result,
)
from search.stats import Spread
from search.tasks.base import Batch


class _Timed:
    """One candidate's pairs and blocks so far."""

    def __init__(self, session, first_batch: int = 0, reference=None) -> None:
        self.session = session
        self.first_batch = first_batch
        self.reference = reference  # None: the run's baseline
        self.base_t: list[float] = []
        self.cand_t: list[float] = []
        self.logs: list[float] = []
        self.loads: list[float] = []
        self.block_seconds: list[float] = []
        self.samples = 0
        self.error: str | None = None
        self.exception: Exception | None = None  # what `error` says, for `paired_speedup`
        self.skipped = False  # an optional candidate the budget could not hold

    @property
    def active(self) -> bool:
        return self.error is None and not self.skipped

    def pair(self, baseline, batch: Batch, clock) -> float:
        """One ABBA pair on `batch`, against the reference if any, else `baseline`. Which
        goes first alternates with the pair's index in the batches (`first_batch` on), so a
        run that goes on from an earlier one's batch keeps the alternation going."""
        baseline = baseline if self.reference is None else self.reference
        if (self.first_batch + len(self.base_t)) % 2 == 0:
            b = timed_run(baseline, batch, clock)
            c = timed_run(self.session, batch, clock)
        else:
            c = timed_run(self.session, batch, clock)
            b = timed_run(baseline, batch, clock)
        self.base_t.append(b)
        self.cand_t.append(c)
        self.samples += len(batch)
        return b + c


def interleaved_speedups(
    baseline,
    candidates: Sequence,
    batches: Sequence[Batch],
    settings: TimingSettings,
    clock: Callable[[], float] = time.perf_counter,
    probe: LoadProbe | None = None,
    baseline_warm: bool = False,
    race_below: Sequence[float | None] | None = None,
    first_batch: Sequence[int] | None = None,
    optional: Sequence[bool] | None = None,
    baseline_seconds: float | None = None,
    priors: Mapping[int, Spread] | None = None,
    references: Sequence | None = None,
) -> list[Speedup | str | None]:
    """Each candidate's speedup over `baseline` from one run bounded by `settings.seconds`
    (for all of them together), the candidates taking turns a block at a time. A candidate
    whose run raises answers the error's message and leaves the turns; the others go on.
    `race_below` gives candidates a frontier speed (None: no bar): the run stops ("raced",
    once each has two blocks) when every candidate with a bar has an upper bound below it,
    as `paired_speedup` does for one. `first_batch` gives each candidate the index of the
    batch its first pair runs (default 0: every candidate the same batches). An `optional`
    candidate answers None, untimed, when after the others' warm-up the budget cannot hold
    two one-pair blocks of every candidate (estimated from the warm-up runs, the optional
    ones and a warm baseline at `baseline_seconds` or the slowest run seen): on a model whose
    pair takes seconds, the measurement that must be made keeps the budget. `priors`: block
    spread lent by the worker's earlier timings, per pairs per block (`search.stats.Spread`),
    for the intervals and the race. `references`: per candidate, another session to time it
    against instead of `baseline` (None: the baseline), its speedup then being over that
    one; such a reference must be a candidate of the same run too, warmed by its own turns,
    so a candidate with a reference has no warm-up runs of its own (`search.pair_graph`)."""
    return _timing_run(
        baseline,
        candidates,
        batches,
        settings,
        clock,
        probe,
        baseline_warm,
        race_below,
        first_batch,
        optional,
        baseline_seconds,
        priors,
        references,
    )[1]


def paired_speedup(
    baseline,
    candidate,
    batches: Sequence[Batch],
    settings: TimingSettings,
    clock: Callable[[], float] = time.perf_counter,
    probe: LoadProbe | None = None,
    race_below: float | None = None,
    baseline_warm: bool = False,
    priors: Mapping[int, Spread] | None = None,
) -> Speedup:
    """Speedup of `candidate` over `baseline`: interleaved runs on the same batches. With
    `race_below`, timing stops ("raced") once the interval's upper bound, floor included, is
    below it: two non-overlapping 95% intervals, checked after each block from the second
    on (the config stays off the frontier unless both intervals are wrong together)."""
    timed, (speed,) = _timing_run(
        baseline,
        [candidate],
        batches,
        settings,
        clock,
        probe,
        baseline_warm,
        (race_below,),
        priors=priors,
    )
    if timed[0].exception is not None:  # as the run raised it: one candidate, nothing to go on
        raise timed[0].exception
    return speed


def _timing_run(
    baseline,
    candidates: Sequence,
    batches: Sequence[Batch],
    settings: TimingSettings,
    clock: Callable[[], float] = time.perf_counter,
    probe: LoadProbe | None = None,
    baseline_warm: bool = False,
    race_below: Sequence[float | None] | None = None,
    first_batch: Sequence[int] | None = None,
    optional: Sequence[bool] | None = None,
    baseline_seconds: float | None = None,
    priors: Mapping[int, Spread] | None = None,
    references: Sequence | None = None,
) -> tuple[list[_Timed], list[Speedup | str | None]]:
    """`interleaved_speedups`, with each candidate's record (its exception, if any)."""
    probe = probe or LoadProbe()
    started = clock()
    timed = [
        _Timed(c, start, ref)
        for c, start, ref in zip(
            candidates,
            first_batch or [0] * len(candidates),
            references or [None] * len(candidates),
            strict=True,
        )
    ]
    optional = list(optional or [False] * len(timed))
    runs: dict[int, float] = {}  # one warm-up run's seconds: -1 the baseline, k a candidate
    _warm_up(baseline, timed, batches, settings, clock, runs, baseline_warm, optional, False)
    if any(optional) and runs:
        base = runs.get(-1) or baseline_seconds or max(runs.values())
        need = sum(2 * (base + runs.get(k, base)) for k, t in enumerate(timed) if t.active)
        if clock() - started + need > settings.seconds:
            for k, t in enumerate(timed):
                t.skipped = t.skipped or optional[k]
    _warm_up(baseline, timed, batches, settings, clock, runs, True, optional, True)
    warmup = clock() - started
    most = settings.block_pairs * (8 if settings.objective == "latency" else 1)
    per_block = most  # resized from the first pair's time, for all candidates' turns
    bars = {k: bar for k, bar in enumerate(race_below or ()) if bar is not None}
    first = True
    timing_started = clock()
    stopped: str | None = None
    while stopped is None and any(t.active for t in timed):
        for t in timed:
            if not t.active:
                continue
            if all(len(x.logs) >= 2 for x in timed if x.active):
                prior = (priors or {}).get(per_block)
                stopped = _stop(timed, bars, settings, clock() - started, t, prior)
            elif all(x.logs for x in timed if x.active) and clock() - started >= settings.seconds:
                stopped = "budget"  # a second block would end more than one block past it
            if stopped:
                break
            begun = clock()
            probe.start()
            in_block = 0
            while in_block < per_block and t.active:
                batch = batches[(t.first_batch + len(t.base_t)) % len(batches)]
                seconds = _guarded(t, lambda t=t, batch=batch: t.pair(baseline, batch, clock))
                in_block += 1
                if first and seconds is not None:  # as if every candidate's pair cost this
                    first = False
                    left = settings.seconds - warmup
                    count = sum(x.active for x in timed)
                    per_block = block_size(settings, most, seconds * count, left)
            load = probe.stop()
            if t.active:
                t.loads.append(load)
                t.logs.append(block_statistic(t.base_t[-in_block:], t.cand_t[-in_block:], settings))
                t.block_seconds.append(clock() - begun)
    stopped = stopped or "budget"
    seconds = clock() - timing_started
    out: list[Speedup | str | None] = []
    for k, t in enumerate(timed):
        if t.error is not None or t.skipped:
            out.append(t.error)
            continue
        out.append(
            timing_result(
                t.logs,
                t.loads,
                t.base_t,
                t.cand_t,
                t.samples,
                settings,
                seconds=seconds,
                stopped=stopped,
                warmup=warmup,
                block_size=per_block,
                race_below=bars.get(k),
                prior=(priors or {}).get(per_block),
            )
        )
    return timed, out


def _stop(
    timed: list[_Timed],
    bars: dict[int, float],
    settings: TimingSettings,
    elapsed: float,
    nxt,
    prior: Spread | None = None,
) -> str | None:
    """Before `nxt`'s next block: "raced", "budget" (that block, at its mean time so far,
    would end past the budget), "target" (every candidate's interval tight), or None."""
    active = [k for k, t in enumerate(timed) if t.active]
    racing = [k for k in bars if k in active]
    if racing and all(_upper(timed[k], settings, prior) < bars[k] for k in racing):
        return "raced"
    if elapsed + float(np.mean(nxt.block_seconds)) > settings.seconds:
        return "budget"
    if all(_tight(timed[k], settings) for k in active):
        return "target"
    return None


def _warm_up(
    baseline, timed, batches, settings, clock, runs, baseline_warm, optional, which: bool
) -> None:
    """The untimed runs before timing, of the baseline (unless warm) and of the candidates
    whose `optional` is `which`, each run's seconds kept in `runs` for the budget's estimate."""
    for i in range(settings.warmup_runs):
        batch = batches[i % len(batches)]
        if not baseline_warm:
            begun = clock()
            baseline.run(None, batch.inputs)
            runs[-1] = clock() - begun
        for k, t in enumerate(timed):
            if optional[k] == which and t.active and t.reference is None:
                begun = clock()
                _guarded(t, lambda t=t, batch=batch: t.session.run(None, batch.inputs))
                runs[k] = clock() - begun


def _guarded(t: _Timed, run: Callable[[], float | None]) -> float | None:
    try:
        return run()
    except Exception as exc:  # noqa: BLE001 - one candidate's failure leaves the others timed
        t.error = f"onnxruntime failed running the model: {exc}".splitlines()[0]
        t.exception = exc
        return None


def _tight(t: _Timed, settings: TimingSettings) -> bool:
    est, loaded = estimate_blocks(t.logs, t.loads, settings, floor=False)
    return est.rel_half_width <= settings.target and len(t.logs) - loaded >= settings.min_blocks


def _upper(t: _Timed, settings: TimingSettings, prior: Spread | None = None) -> float:
    return estimate_blocks(t.logs, t.loads, settings, prior=prior)[0].high
