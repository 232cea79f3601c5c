"""Do trial intervals that borrow the worker's block spread still cover, and how much narrower
are they? Both intervals from the same blocks, side by side.

A trial whose budget holds two or three blocks (a BERT-base-size model: one pair takes 4-5 s
of a 12 s budget on 2 cores) reads its own block variance with one or two degrees of freedom:
Student's t is 12.7 or 4.3 there, and a 1.98x trial read [0.50-7.94] on an AMD EPYC (avx2).
The evaluator lends each trial the spread of its earlier trials' blocks (`search.stats.Spread`,
per pairs per block). Here configs of the default task are timed in turn as trials are, with
a short `--seconds` so each holds few blocks, against one fp32 session (a search's worker),
each repeat a fresh candidate session; each timing's blocks give two intervals: its own (the
t-interval of its blocks, as before) and the lent one (the spread of every earlier timing in
this run pooled with its own, as the evaluator does). For each config: the CV of its speedup
across repeats, and how often each interval covers the median of all its repeats (the drift
floor included in both), with the median width. Prints a table and one JSON line.

    .venv/bin/python benchmarks/lent_spread.py --repeats 20 --seconds 1.5   # make bench-lent
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from search.config import QuantConfig, make_session_options  # noqa: E402
from search.interleave import paired_speedup  # noqa: E402
from search.measure import (  # noqa: E402
    TimingSettings,
    estimate_blocks,
    lend_spread,
    make_session,
)
from search.quantize import quantize, quiet_libraries  # noqa: E402
from search.stats import Spread  # noqa: E402
from search.worker import describe_worker, worker_info  # noqa: E402

CONFIGS = {
    "dynamic MatMul": QuantConfig(operators=("MatMul",)),
    "dynamic MatMul + Gather": QuantConfig(operators=("Gather", "MatMul")),
    "dynamic Gather": QuantConfig(operators=("Gather",)),
}


def run_benchmark(task, repeats: int, timing: TimingSettings, progress=print) -> list[dict]:
    quiet_libraries()
    work = Path(tempfile.mkdtemp(prefix="qsearch-lent-"))
    try:
        options = make_session_options(threads=timing.threads)
        paths = {
            n: quantize(c, task.model_path, work / str(i))
            for i, (n, c) in enumerate(CONFIGS.items())
        }
        fp32 = make_session(task.model_path, options)
        batches = task.timing_batches
        spread: dict[int, Spread] = {}
        runs: dict[str, list[dict]] = {name: [] for name in CONFIGS}
        warm = False
        for r in range(repeats):
            for name, path in paths.items():
                speed = paired_speedup(
                    fp32, make_session(path, options), batches, timing, baseline_warm=warm
                )
                warm = True
                logs, loads = list(speed.block_logs), [0.0] * len(speed.block_logs)
                own = estimate_blocks(logs, loads, timing)[0]
                lent = estimate_blocks(logs, loads, timing, prior=spread.get(speed.block_size))[0]
                runs[name].append(
                    {
                        "speedup": speed.ratio,
                        "blocks": speed.blocks,
                        "own": (own.low, own.high),
                        "lent": (lent.low, lent.high),
                        "lent_df": (spread.get(speed.block_size) or Spread()).df,
                        "loaded": speed.loaded,
                    }
                )
                lend_spread(spread, speed)  # as the evaluator does after a trial
            progress(
                f"repeat {r + 1}/{repeats}: "
                + ", ".join(f"{n} {runs[n][-1]['speedup']:.3f}" for n in runs)
            )
        return [summarize(name, rows) for name, rows in runs.items()]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def summarize(name: str, rows: list[dict]) -> dict:
    values = [r["speedup"] for r in rows]
    median = statistics.median(values)
    out = {
        "config": name,
        "repeats": len(rows),
        "median_speedup": round(median, 4),
        "cv_percent": round(100 * statistics.pstdev(values) / statistics.mean(values), 2),
        "median_blocks": statistics.median(r["blocks"] for r in rows),
        "loaded": sum(r["loaded"] for r in rows),
    }
    for kind in ("own", "lent"):
        spans = [r[kind] for r in rows]
        out[f"{kind}_coverage"] = round(sum(lo <= median <= hi for lo, hi in spans) / len(rows), 3)
        widths = [math.log(hi / lo) / 2 for lo, hi in spans]
        out[f"{kind}_median_half_width_percent"] = round(100 * statistics.median(widths), 2)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=1.5, help="each timing's budget")
    args = parser.parse_args(argv)
    from search.tasks.default import default_task

    timing = TimingSettings(seconds=args.seconds)
    worker = worker_info(timing.threads)
    rows = run_benchmark(default_task(), args.repeats, timing)
    print(
        f"\nTrial intervals, own vs lent block spread ({describe_worker(worker)}, "
        f"--seconds {args.seconds:g}, {args.repeats} repeats)"
    )
    print(
        f"{'config':<26} {'median':>8} {'CV %':>6} {'blocks':>6} {'own cover':>10} "
        f"{'own +-%':>8} {'lent cover':>11} {'lent +-%':>9}"
    )
    for r in rows:
        print(
            f"{r['config']:<26} {r['median_speedup']:>8.3f} {r['cv_percent']:>6.2f} "
            f"{r['median_blocks']:>6} {100 * r['own_coverage']:>9.0f}% "
            f"{r['own_median_half_width_percent']:>8.2f} {100 * r['lent_coverage']:>10.0f}% "
            f"{r['lent_median_half_width_percent']:>9.2f}"
        )
    print(
        json.dumps(
            {
                "benchmark": "lent_spread",
                "cpu": describe_worker(worker),
                "isa": worker.get("isa"),
                "seconds": args.seconds,
                "rows": rows,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
