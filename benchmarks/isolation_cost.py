"""What does running trials in a child process cost?

Evaluates the same configs of the default task in-process (`Evaluator`) and isolated
(`IsolatedEvaluator`, the default of `qsearch run`), alternating the two for each config so
drift hits both alike, and measures the one-off cost of starting the warm child (spawn,
imports, fp32 session and outputs) against the same work in-process. Prints a table and one
JSON line.

    .venv/bin/python benchmarks/isolation_cost.py --trials 6
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from search.config import QuantConfig  # noqa: E402
from search.isolation import IsolatedEvaluator  # noqa: E402
from search.measure import TimingSettings  # noqa: E402
from search.objective import Evaluator  # noqa: E402
from search.quantize import quiet_libraries  # noqa: E402
from search.worker import describe_worker, worker_info  # noqa: E402

CONFIGS = [
    QuantConfig(mode="dynamic", operators=("MatMul",)),
    QuantConfig(mode="dynamic", operators=("MatMul",), per_channel=True),
    QuantConfig(mode="dynamic", operators=("Gather", "MatMul")),
]


def run_benchmark(task, trials: int, timing: TimingSettings, progress=print) -> dict:
    t = time.perf_counter()
    inline = Evaluator(task, timing)
    _ = inline.fp32_accuracy
    start_inline = time.perf_counter() - t
    t = time.perf_counter()
    isolated = IsolatedEvaluator(task, timing)
    _ = isolated.fp32_accuracy
    start_isolated = time.perf_counter() - t
    walls: dict[str, list[float]] = {"in-process": [], "isolated": []}
    try:
        for i in range(trials):
            config = CONFIGS[i % len(CONFIGS)]
            order = [("in-process", inline), ("isolated", isolated)]
            for name, evaluator in order if i % 2 == 0 else order[::-1]:
                t = time.perf_counter()
                evaluator.evaluate(config)
                walls[name].append(time.perf_counter() - t)
                progress(f"trial {i + 1}/{trials} {name}: {walls[name][-1]:.2f} s")
    finally:
        inline.close()
        isolated.close()
    median = {k: statistics.median(v) for k, v in walls.items()}
    return {
        "trials": trials,
        "start_in_process_s": round(start_inline, 3),
        "start_isolated_s": round(start_isolated, 3),
        "start_overhead_s": round(start_isolated - start_inline, 3),
        "median_trial_in_process_s": round(median["in-process"], 3),
        "median_trial_isolated_s": round(median["isolated"], 3),
        "per_trial_overhead_s": round(median["isolated"] - median["in-process"], 3),
        "isolated_over_in_process": round(median["isolated"] / median["in-process"], 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6, help="configs evaluated both ways")
    parser.add_argument("--timing-seconds", type=float, default=12.0)
    options = parser.parse_args(argv)
    quiet_libraries()
    from search.tasks.default import default_task

    task = default_task()
    result = run_benchmark(task, options.trials, TimingSettings(seconds=options.timing_seconds))
    print(f"\nworker: {describe_worker(worker_info())}")
    print(f"{'':28}{'in-process':>12}{'isolated':>12}{'difference':>12}")
    print(
        f"{'start (fp32 + child) s':28}{result['start_in_process_s']:>12.2f}"
        f"{result['start_isolated_s']:>12.2f}{result['start_overhead_s']:>12.2f}"
    )
    print(
        f"{'median trial s':28}{result['median_trial_in_process_s']:>12.2f}"
        f"{result['median_trial_isolated_s']:>12.2f}{result['per_trial_overhead_s']:>12.2f}"
    )
    print(f"isolated / in-process per trial: {result['isolated_over_in_process']:.3f}")
    print(json.dumps({"benchmark": "isolation_cost", **result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
