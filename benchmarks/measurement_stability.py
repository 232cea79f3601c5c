"""Is the measured speedup stable across independent runs, and do its intervals hold?

Measures the same (fp32, int8) pair of the default task R times, three ways side by side in
one run, each repeat with fresh sessions:

- naive: the seed's way: time fp32 alone for S seconds, then int8 alone, ratio of throughputs;
- paired: qsearch's paired, interleaved, block measurement (`search.interleave.paired_speedup`);
- paired+load: the same while this script keeps one core busy with a synthetic load.

Prints a table (median speedup, CV across repeats, share of intervals covering the median of
all repeats of that method, seconds per measurement) and one JSON line.

    .venv/bin/python benchmarks/measurement_stability.py --repeats 10
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from search.config import QuantConfig, make_session_options  # noqa: E402
from search.interleave import paired_speedup  # noqa: E402
from search.measure import TimingSettings, make_session  # noqa: E402
from search.quantize import quantize, quiet_libraries  # noqa: E402
from search.worker import describe_worker, worker_info  # noqa: E402

CONFIG = QuantConfig(mode="dynamic", operators=("MatMul",))


def _spin(stop) -> None:
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x += 1


class SyntheticLoad:
    """One busy process for the duration of a `with` block."""

    def __enter__(self):
        self.stop = multiprocessing.Event()
        self.process = multiprocessing.Process(target=_spin, args=(self.stop,), daemon=True)
        self.process.start()
        time.sleep(0.5)
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()


def naive_speedup(fp32, int8, batches, seconds: float) -> float:
    """The seed's measurement: each model alone for `seconds`, ratio of throughputs."""

    def throughput(session) -> float:
        session.run(None, batches[0].inputs)
        samples, start, i = 0, time.perf_counter(), 0
        while time.perf_counter() - start < seconds:
            batch = batches[i % len(batches)]
            session.run(None, batch.inputs)
            samples += len(batch)
            i += 1
        return samples / (time.perf_counter() - start)

    base = throughput(fp32)
    return throughput(int8) / base


def summarize(
    name: str,
    values: list[float],
    intervals: list[tuple[float, float]] | None,
    seconds: list[float],
) -> dict:
    median = statistics.median(values)
    cv = statistics.pstdev(values) / statistics.mean(values) if len(values) > 1 else 0.0
    coverage = None
    if intervals:
        coverage = sum(lo <= median <= hi for lo, hi in intervals) / len(intervals)
    return {
        "method": name,
        "repeats": len(values),
        "median_speedup": round(median, 4),
        "cv_percent": round(100 * cv, 2),
        "coverage": None if coverage is None else round(coverage, 3),
        "seconds_per_measurement": round(statistics.mean(seconds), 2),
        "speedups": [round(v, 4) for v in values],
    }


def run_benchmark(
    task,
    repeats: int,
    naive_seconds: float,
    timing: TimingSettings,
    with_load: bool = True,
    progress=print,
    quick: TimingSettings | None = None,
) -> list[dict]:
    """`quick`, when given, adds the paired method under other settings (a looser target)
    side by side, to see what stopping earlier costs in CV and coverage."""
    quiet_libraries()
    work = Path(tempfile.mkdtemp(prefix="qsearch-stability-"))
    try:
        int8_path = quantize(CONFIG, task.model_path, work / "int8")
        batches = task.timing_batches
        quick_name = f"paired@{100 * quick.target:g}%" if quick else ""
        methods = [("paired", False, timing)]
        methods += [("paired+load", True, timing)] if with_load else []
        methods += [(quick_name, False, quick)] if quick else []
        results: dict[str, dict[str, list]] = {
            m: {"values": [], "intervals": [], "seconds": []}
            for m in ("naive", *(name for name, _, _ in methods))
        }
        for r in range(repeats):

            def sessions():
                options = make_session_options(threads=timing.threads)
                return make_session(task.model_path, options), make_session(int8_path, options)

            fp32, int8 = sessions()
            t = time.perf_counter()
            results["naive"]["values"].append(naive_speedup(fp32, int8, batches, naive_seconds))
            results["naive"]["seconds"].append(time.perf_counter() - t)
            for name, loaded, settings in methods:
                fp32, int8 = sessions()
                t = time.perf_counter()
                if loaded:
                    with SyntheticLoad():
                        speed = paired_speedup(fp32, int8, batches, settings)
                else:
                    speed = paired_speedup(fp32, int8, batches, settings)
                results[name]["values"].append(speed.ratio)
                results[name]["intervals"].append((speed.low, speed.high))
                results[name]["seconds"].append(time.perf_counter() - t)
            progress(
                f"repeat {r + 1}/{repeats}: naive {results['naive']['values'][-1]:.3f}, "
                f"paired {results['paired']['values'][-1]:.3f}"
                + (f", loaded {results['paired+load']['values'][-1]:.3f}" if with_load else "")
                + (f", {quick_name} {results[quick_name]['values'][-1]:.3f}" if quick else "")
            )
        return [
            summarize(name, data["values"], data["intervals"] or None, data["seconds"])
            for name, data in results.items()
            if data["values"]
        ]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument(
        "--naive-seconds",
        type=float,
        default=5.0,
        help="seconds each model runs alone in the naive method",
    )
    parser.add_argument("--seconds", type=float, default=12.0, help="paired timing budget")
    parser.add_argument("--target", type=float, default=0.02)
    parser.add_argument("--no-load", action="store_true", help="skip the loaded method")
    parser.add_argument(
        "--quick-target",
        type=float,
        default=None,
        help="also measure the paired method stopping at this target, side by side",
    )
    args = parser.parse_args(argv)

    from search.tasks.default import default_task

    task = default_task()
    timing = TimingSettings(seconds=args.seconds, target=args.target)
    quick = (
        TimingSettings(seconds=args.seconds, target=args.quick_target)
        if args.quick_target
        else None
    )
    rows = run_benchmark(
        task, args.repeats, args.naive_seconds, timing, not args.no_load, quick=quick
    )
    worker = worker_info(timing.threads)
    print(
        f"\nMeasurement stability on {describe_worker(worker)}, {task.name}, "
        f"{CONFIG.describe()}, {args.repeats} repeats"
    )
    header = f"{'method':<14} {'median':>8} {'CV %':>6} {'coverage':>9} {'s/measure':>10}"
    print(header)
    print("-" * len(header))
    for row in rows:
        coverage = "n/a" if row["coverage"] is None else f"{100 * row['coverage']:.0f}%"
        print(
            f"{row['method']:<14} {row['median_speedup']:>8.3f} {row['cv_percent']:>6.2f} "
            f"{coverage:>9} {row['seconds_per_measurement']:>10.1f}"
        )
    print(
        json.dumps(
            {
                "benchmark": "measurement_stability",
                "worker": worker,
                "timing": timing.to_dict(),
                "results": rows,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
