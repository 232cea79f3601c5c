"""Which MatMuls to quantize, side by side: every-MatMul (what Optimum quantizes) against
weight-MatMuls-only (onnxruntime's MatMulConstBOnly, now `matmul_scope = "weights"`), with
every distinct Optimum dynamic preset for reference, on the default task; and the weight-MatMul
config on the attention-fused model (`attention_fusion`: QAttention, or the fused block left
fp32), whose speedup is measured against the same unfused fp32 export as every other row.

Each candidate is timed against fp32 on the same batches, round-robin: round r times every
candidate once (`--seconds` each, paired and interleaved with fp32) before round r+1, so the
machine's drift between minutes hits all candidates alike. Speedups pool a candidate's
rounds (geometric mean of the rounds' ratios, interval from their spread). Accuracy is on the
task's evaluation set. The last line answers issue 13's bar on this CPU: the fastest row within
1 point of fp32 against the fastest preset, their ratio taken round by round (same rounds,
same fp32). Prints a table and one JSON line.

    .venv/bin/python benchmarks/node_scopes.py --rounds 3 --seconds 10
    .venv/bin/python benchmarks/node_scopes.py --only "weight MatMuls, per-channel" --rounds 2
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
from search.interleave import paired_speedup  # noqa: E402
from search.measure import TimingSettings, make_session  # noqa: E402
from search.quantize import quantize, quiet_libraries  # noqa: E402
from search.stats import block_estimate  # noqa: E402
from search.worker import describe_worker, worker_info  # noqa: E402

FUSION_OFF = ("SkipLayerNormFusion",)
PRESET_PREFIX = "optimum "
MAX_DROP_POINTS = 1.0  # issue 13's bar: within 1 point of fp32


def candidates(fusion: bool = False) -> dict[str, QuantConfig]:
    """The rows, by name; `fusion` adds the attention-fused ones."""
    base = QuantConfig(operators=("MatMul",), per_channel=True, disabled_fusions=FUSION_OFF)
    weights = base.replace(matmul_scope="weights")
    fused = {
        "weight MatMuls, per-channel, fused attention (QAttention)": weights.replace(
            attention_fusion=True, operators=["Attention", "MatMul"]
        ),
        "weight MatMuls, per-channel, fused attention fp32": weights.replace(attention_fusion=True),
    }
    return {
        "all MatMuls, per-channel": base,
        "all MatMuls, per-tensor": base.replace(per_channel=False),  # the AVX2 seed recipe
        "weight MatMuls, per-channel": base.replace(matmul_scope="weights"),
        "weight MatMuls, per-tensor": base.replace(matmul_scope="weights", per_channel=False),
        "weight MatMuls + Gather, per-channel": base.replace(
            matmul_scope="weights", operators=["Gather", "MatMul"]
        ),
        **presets(),
        **(fused if fusion else {}),
    }


def presets() -> dict[str, QuantConfig]:
    """Optimum's dynamic presets, one row per distinct config ("optimum avx512/avx512_vnni/arm64
    preset": several presets are the same config), so the fastest on this CPU is among them."""
    names: dict[QuantConfig, list[str]] = {}
    for name, config in optimum_dynamic_presets().items():
        names.setdefault(config, []).append(name)
    return {f"{PRESET_PREFIX}{'/'.join(n)} preset": c for c, n in names.items()}


def versus_presets(rows: list[dict], max_drop: float = MAX_DROP_POINTS) -> dict | None:
    """The fastest non-preset row within `max_drop` points of fp32 against the fastest preset:
    the ratio of their speedups round by round (both paired with the same fp32 in each round),
    pooled like a speedup. None without a row on each side."""
    ours = [r for r in rows if not r["config"].startswith(PRESET_PREFIX)]
    ours = [r for r in ours if r["drop_points"] <= max_drop + 1e-9]
    theirs = [r for r in rows if r["config"].startswith(PRESET_PREFIX)]
    if not ours or not theirs:
        return None
    best = max(ours, key=lambda r: r["speedup"])
    preset = max(theirs, key=lambda r: r["speedup"])
    logs = [math.log(a / b) for a, b in zip(best["rounds"], preset["rounds"], strict=True)]
    est = block_estimate(logs)
    return {
        "best": best["config"],
        "best_speedup": best["speedup"],
        "best_drop_points": best["drop_points"],
        "preset": preset["config"],
        "preset_speedup": preset["speedup"],
        "ratio": est.ratio,
        "low": est.low,
        "high": est.high,
    }


def select(configs: dict[str, QuantConfig], only: list[str] | None) -> dict[str, QuantConfig]:
    """The rows whose name starts with one of `only` (all rows when None); none is an error."""
    if not only:
        return configs
    chosen = {n: c for n, c in configs.items() if any(n.startswith(p) for p in only)}
    if not chosen:
        raise SystemExit(f"--only must start a row's name ({', '.join(configs)}), got {only}")
    return chosen


def round_robin(
    fp32, sessions: dict, batches, rounds: int, seconds: float, progress=print
) -> dict[str, list[float]]:
    """Each session's speedup over `fp32` in every round: round r times every session once
    (`seconds` each, paired and interleaved with fp32) before round r + 1, so the machine's
    drift between minutes hits them all alike."""
    settings = TimingSettings(seconds=seconds, target=1e-9, floor=0.0)
    ratios: dict[str, list[float]] = {name: [] for name in sessions}
    for r in range(rounds):
        for name, session in sessions.items():
            speed = paired_speedup(fp32, session, batches, settings, baseline_warm=r > 0)
            ratios[name].append(speed.ratio)
            progress(f"round {r + 1}: {name}: {speed.ratio:.3f}x")
    return ratios


def pooled_rounds(ratios: list[float]) -> dict:
    """A candidate's rounds pooled as blocks: the geometric mean and its 95% t-interval."""
    est = block_estimate([math.log(x) for x in ratios])
    return {"speedup": est.ratio, "low": est.low, "high": est.high, "rounds": ratios}


def run_benchmark(
    task,
    rounds: int,
    seconds: float,
    progress=print,
    fusion: bool = False,
    only: list[str] | None = None,
) -> dict:
    """Accuracy and round-robin speedup of every candidate on `task` (see the docstring)."""
    from search.calibrate import CalibrationCache

    configs = select(candidates(fusion), only)
    fp32 = make_session(task.model_path, make_session_options())
    fp32_outputs = task.outputs(fp32)
    fp32_accuracy = task.score(fp32_outputs)
    sessions, accuracy = {}, {}
    with tempfile.TemporaryDirectory() as work:
        cache = CalibrationCache(task)
        for i, (name, config) in enumerate(configs.items()):
            path = quantize(config, task.model_path, Path(work) / str(i), cache.ranges(config))
            sessions[name] = make_session(path, config.session_options())
            accuracy[name] = task.score(task.outputs(sessions[name]), fp32_outputs)
        ratios = round_robin(fp32, sessions, task.timing_batches, rounds, seconds, progress)
    rows = []
    for name, config in configs.items():
        rows.append(
            {
                "config": name,
                "description": config.describe(),
                "accuracy": accuracy[name],
                "drop_points": 100 * (fp32_accuracy - accuracy[name]),
                **pooled_rounds(ratios[name]),
            }
        )
    cpu = describe_worker(worker_info())
    return {
        "cpu": cpu,
        "fp32_accuracy": fp32_accuracy,
        "rounds": rounds,
        "rows": rows,
        "versus_presets": versus_presets(rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0, help="timing per candidate/round")
    parser.add_argument(
        "--no-fusion", action="store_true", help="leave out the attention-fused rows"
    )
    parser.add_argument(
        "--only", action="append", help="run only rows whose name starts with this (repeatable)"
    )
    args = parser.parse_args()
    quiet_libraries()
    from search.tasks.default import default_task

    result = run_benchmark(
        default_task(),
        args.rounds,
        args.seconds,
        lambda m: print(m, file=sys.stderr),
        fusion=not args.no_fusion,
        only=args.only,
    )
    print(
        f"CPU: {result['cpu']}; fp32 accuracy {result['fp32_accuracy']:.4f}; "
        f"{args.rounds} rounds x {args.seconds:g} s, round-robin"
    )
    width = max(40, *(len(row["config"]) for row in result["rows"]))
    print(
        f"{'config':<{width}} {'accuracy':>9} {'drop pts':>9} {'speedup':>8} {'95% interval':>16}"
    )
    for row in result["rows"]:
        interval = f"[{row['low']:.2f}-{row['high']:.2f}]"
        print(
            f"{row['config']:<{width}} {row['accuracy']:>9.4f} {row['drop_points']:>9.1f} "
            f"{row['speedup']:>7.2f}x {interval:>16}"
        )
    vs = result["versus_presets"]
    if vs:
        print(
            f"fastest within {MAX_DROP_POINTS:g} point: {vs['best']} {vs['best_speedup']:.2f}x "
            f"({-vs['best_drop_points']:+.1f} points), {vs['ratio']:.3f}x "
            f"[{vs['low']:.3f}-{vs['high']:.3f}] of the fastest preset ({vs['preset']}, "
            f"{vs['preset_speedup']:.2f}x), round by round"
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
