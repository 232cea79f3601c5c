"""Several candidates timed against one baseline in one run, interleaved batch by batch: a
confirmation round (`Evaluator.retime_round`).

Why: a round that times candidate A against fp32 for a few seconds, then B, leaves the
machine's drift between those seconds in the ratio of A to B. Here every step runs the
baseline and each candidate once on the same batch, in an order rotated one place per step,
and each candidate's pair is (the baseline's run, its own run) of the same step: a drift
hits fp32, A and B within a fraction of a second of each other, so the ratio between two
candidates keeps only their own noise. With one candidate the steps are `paired_speedup`'s
ABBA. Blocks, loads, the budget (warm-up included, never one block past it) and the
estimate are `search.measure`'s, shared by every candidate of the run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

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
from search.tasks.base import Batch


def interleaved_speedups(
    baseline,
    candidates: Sequence,
    batches: Sequence[Batch],
    settings: TimingSettings,
    clock: Callable[[], float] = time.perf_counter,
    probe: LoadProbe | None = None,
    baseline_warm: bool = False,
    race_below: Sequence[float | None] | None = None,
) -> list[Speedup | str]:
    """Each candidate's speedup over `baseline` from one interleaved run bounded by
    `settings.seconds` (for all of them together). A candidate whose run raises answers the
    error's message and leaves the rotation; the others go on. `race_below` gives candidates
    a frontier speed (None: no bar): the run stops ("raced", from two blocks on) once every
    candidate with a bar has an upper bound below it, as `paired_speedup` does for one."""
    probe = probe or LoadProbe()
    started = clock()
    errors: dict[int, str] = {}
    for i in range(settings.warmup_runs):
        batch = batches[i % len(batches)]
        if not baseline_warm:
            baseline.run(None, batch.inputs)
        for k, candidate in enumerate(candidates):
            if k not in errors:
                _run_or_drop(candidate, batch, k, errors)
    warmup = clock() - started
    count = len(candidates)
    most = settings.block_pairs * (8 if settings.objective == "latency" else 1)
    per_block = most
    base_t: list[list[float]] = [[] for _ in candidates]  # the baseline's run of each pair
    cand_t: list[list[float]] = [[] for _ in candidates]
    logs: list[list[float]] = [[] for _ in candidates]
    loads: list[float] = []
    samples = 0
    timing_started = clock()
    stopped = "budget"
    bars = {k: bar for k, bar in enumerate(race_below or ()) if bar is not None}
    step = 0
    while len(errors) < count:
        probe.start()
        in_block = 0
        while in_block < per_block:
            batch = batches[step % len(batches)]
            base, runs = _step(baseline, candidates, batch, step, errors, clock)
            for k, seconds in runs.items():
                base_t[k].append(base)
                cand_t[k].append(seconds)
            in_block += 1
            samples += len(batch)
            step += 1
            if step == 1:
                spent = base + sum(runs.values())
                per_block = block_size(settings, most, spent, settings.seconds - warmup)
        loads.append(probe.stop())
        active = [k for k in range(count) if k not in errors]
        for k in active:
            logs[k].append(block_statistic(base_t[k][-in_block:], cand_t[k][-in_block:], settings))
        blocks = len(loads)
        if blocks < 2:
            continue
        racing = [k for k in bars if k in active]
        if racing and all(_upper(logs[k], loads, settings) < bars[k] for k in racing):
            stopped = "raced"
            break
        elapsed = clock() - started
        if elapsed + (clock() - timing_started) / blocks > settings.seconds:
            break
        if blocks < settings.min_blocks:
            continue
        if all(_tight(logs[k], loads, settings) for k in active):
            stopped = "target"
            break
    timed = clock() - timing_started
    out: list[Speedup | str] = []
    for k in range(count):
        if k in errors:
            out.append(errors[k])
            continue
        out.append(
            timing_result(
                logs[k],
                loads,
                base_t[k],
                cand_t[k],
                samples,
                settings,
                seconds=timed,
                stopped=stopped,
                warmup=warmup,
                block_size=per_block,
                race_below=bars.get(k),
            )
        )
    return out


def _step(
    baseline, candidates, batch: Batch, step: int, errors: dict[int, str], clock
) -> tuple[float, dict[int, float]]:
    """One step: the baseline (key -1) and every candidate still in the rotation, once each
    on `batch`, starting one place further along than the step before; the baseline's
    seconds and each candidate's that ran."""
    models = [-1] + [k for k in range(len(candidates)) if k not in errors]
    shift = step % len(models)
    runs: dict[int, float] = {}
    for k in models[shift:] + models[:shift]:
        if k == -1:
            runs[-1] = timed_run(baseline, batch, clock)
            continue
        try:
            runs[k] = timed_run(candidates[k], batch, clock)
        except Exception as exc:  # noqa: BLE001 - one candidate's failure leaves the others timed
            errors[k] = f"onnxruntime failed running the model: {exc}".splitlines()[0]
    return runs.pop(-1), runs


def _run_or_drop(candidate, batch: Batch, k: int, errors: dict[int, str]) -> None:
    try:
        candidate.run(None, batch.inputs)
    except Exception as exc:  # noqa: BLE001
        errors[k] = f"onnxruntime failed running the model: {exc}".splitlines()[0]


def _tight(logs: list[float], loads: list[float], settings: TimingSettings) -> bool:
    est, loaded = estimate_blocks(logs, loads, settings, floor=False)
    return est.rel_half_width <= settings.target and len(logs) - loaded >= settings.min_blocks


def _upper(logs: list[float], loads: list[float], settings: TimingSettings) -> float:
    return estimate_blocks(logs, loads, settings)[0].high
