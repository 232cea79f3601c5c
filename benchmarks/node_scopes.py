"""Which MatMuls to quantize, side by side: every-MatMul (what Optimum quantizes) against
weight-MatMuls-only (onnxruntime's MatMulConstBOnly, now `matmul_scope = "weights"`), with
Optimum's fastest preset for reference, on the default task.

Each candidate is timed against fp32 on the same batches, round-robin: round r times every
candidate once (`--seconds` each, paired and interleaved with fp32) before round r+1, so the
machine's drift between minutes hits all candidates alike. Speedups pool a candidate's
rounds (geometric mean of the rounds' ratios, interval from their spread). Accuracy is on the
task's evaluation set. Prints a table and one JSON line.

    .venv/bin/python benchmarks/node_scopes.py --rounds 3 --seconds 10
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from search.config import QuantConfig, make_session_options, optimum_dynamic_presets  # noqa: E402
from search.measure import TimingSettings, make_session, paired_speedup  # noqa: E402
from search.quantize import quantize, quiet_libraries  # noqa: E402
from search.stats import block_estimate  # noqa: E402
from search.worker import describe_worker, worker_info  # noqa: E402

FUSION_OFF = ("SkipLayerNormFusion",)


def candidates() -> dict[str, QuantConfig]:
    base = QuantConfig(operators=("MatMul",), per_channel=True, disabled_fusions=FUSION_OFF)
    presets = optimum_dynamic_presets()
    return {
        "all MatMuls, per-channel": base,
        "weight MatMuls, per-channel": base.replace(matmul_scope="weights"),
        "weight MatMuls, per-tensor": base.replace(matmul_scope="weights", per_channel=False),
        "weight MatMuls + Gather, per-channel": base.replace(
            matmul_scope="weights", operators=["Gather", "MatMul"]
        ),
        "optimum avx512_vnni preset": presets["avx512_vnni"],
    }


def run_benchmark(task, rounds: int, seconds: float, progress=print) -> dict:
    """Accuracy and round-robin speedup of every candidate on `task` (see the docstring)."""
    from search.calibrate import CalibrationCache

    configs = candidates()
    fp32 = make_session(task.model_path, make_session_options())
    fp32_outputs = task.outputs(fp32)
    fp32_accuracy = task.score(fp32_outputs)
    sessions, accuracy = {}, {}
    ratios: dict[str, list[float]] = {name: [] for name in configs}
    with tempfile.TemporaryDirectory() as work:
        cache = CalibrationCache(task)
        for i, (name, config) in enumerate(configs.items()):
            path = quantize(config, task.model_path, Path(work) / str(i), cache.ranges(config))
            sessions[name] = make_session(path, config.session_options())
            accuracy[name] = task.score(task.outputs(sessions[name]), fp32_outputs)
        settings = TimingSettings(seconds=seconds, target=1e-9, floor=0.0)
        for r in range(rounds):
            for name in configs:
                speed = paired_speedup(
                    fp32, sessions[name], task.timing_batches, settings, baseline_warm=r > 0
                )
                ratios[name].append(speed.ratio)
                progress(f"round {r + 1}: {name}: {speed.ratio:.3f}x")
    rows = []
    for name, config in configs.items():
        est = block_estimate([math.log(x) for x in ratios[name]])  # rounds as blocks
        rows.append(
            {
                "config": name,
                "description": config.describe(),
                "accuracy": accuracy[name],
                "drop_points": 100 * (fp32_accuracy - accuracy[name]),
                "speedup": est.ratio,
                "low": est.low,
                "high": est.high,
                "rounds": ratios[name],
            }
        )
    cpu = describe_worker(worker_info())
    return {"cpu": cpu, "fp32_accuracy": fp32_accuracy, "rounds": rounds, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0, help="timing per candidate/round")
    args = parser.parse_args()
    quiet_libraries()
    from search.tasks.default import default_task

    result = run_benchmark(
        default_task(), args.rounds, args.seconds, lambda m: print(m, file=sys.stderr)
    )
    print(
        f"CPU: {result['cpu']}; fp32 accuracy {result['fp32_accuracy']:.4f}; "
        f"{args.rounds} rounds x {args.seconds:g} s, round-robin"
    )
    print(f"{'config':<40} {'accuracy':>9} {'drop pts':>9} {'speedup':>8} {'95% interval':>16}")
    for row in result["rows"]:
        interval = f"[{row['low']:.2f}-{row['high']:.2f}]"
        print(
            f"{row['config']:<40} {row['accuracy']:>9.4f} {row['drop_points']:>9.1f} "
            f"{row['speedup']:>7.2f}x {interval:>16}"
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
