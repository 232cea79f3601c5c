"""Where the time goes, and how far a speedup can go on this CPU: onnxruntime's own profile
(kernel time per operator type) of fp32 and of quantized configs, on the task's timing batches.

Why (issue 13): its bar (2.75x within 1 point, set on an Intel Xeon with AMX) was never
reached on CPUs with AVX512-VNNI but no AMX (2.08x on an Intel Xeon, 2.63x on an AMD Zen 4).
A search only chooses which parts run in int8; what the int8 kernels and the parts left in
fp32 cost is the CPU's. Splitting the quantized model's time into its int8 operators
(quantization of activations included) and the fp32 ones left around them gives Amdahl's
answer: with `rest` the fp32 part, no config that leaves it fp32 beats `fp32 / rest`
however fast its int8 kernels, and reaching `--target` needs the int8 part to shrink to
`fp32 / target - rest`, i.e. to run `int8 / (fp32 / target - rest)` times faster than it does.

Kernel times exclude the session's own overhead between nodes, so their ratio reads a little
apart from a wall-clock speedup (the `wall` figure: the same models timed without profiling,
in paired rounds against fp32 as `node_scopes.py` times them); the table prints both.
Prints a table and one JSON line.

    .venv/bin/python benchmarks/op_profile.py --only "weight MatMuls, per-tensor" --target 2.75
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # node_scopes' rows, also when imported

from node_scopes import candidates, pooled_rounds, round_robin, select  # noqa: E402

from search.config import make_session_options  # noqa: E402
from search.measure import make_session  # noqa: E402
from search.quantize import quantize, quiet_libraries  # noqa: E402
from search.worker import describe_worker, worker_info  # noqa: E402

FP32 = "fp32"
GEMMS = ("MatMul", "Gemm", "FusedGemm", "FusedMatMul")  # fp32 products


def is_int8(op_type: str) -> bool:
    """Whether an operator runs in int8 or (de)quantizes for one: QLinear*, QGemm, QAttention,
    MatMulInteger(ToFloat), DynamicQuantizeMatMul, (Dynamic)QuantizeLinear, DequantizeLinear."""
    name = op_type.lower()
    return (
        "quantize" in name
        or "integer" in name
        or op_type.startswith("QLinear")
        or (len(op_type) > 1 and op_type[0] == "Q" and op_type[1].isupper())
    )


def op_times(events: list[dict], skip_runs: int = 0) -> tuple[Counter, int]:
    """Kernel microseconds per operator type over an onnxruntime profile, and its runs,
    leaving out the first `skip_runs` runs (warm-up)."""
    starts = sorted(e["ts"] for e in events if e.get("name") == "model_run")
    since = starts[skip_runs] if skip_runs < len(starts) else float("inf")
    times: Counter = Counter()
    for event in events:
        if event.get("cat") != "Node" or event["ts"] < since:
            continue
        if event.get("name", "").endswith("_kernel_time"):
            times[event["args"]["op_name"]] += event["dur"]
    return times, len(starts) - min(skip_runs, len(starts))


def profiles(models: dict, batches: list, passes: int, work: Path) -> dict[str, dict[str, float]]:
    """Milliseconds per batch of each operator type, for each of `models` (name -> model, a
    maker of its session options): all profiled in the same minutes, round-robin batch by
    batch, after a warm pass that is left out (a session profiles from its start)."""
    sessions = {}
    for i, (name, (path, make_options)) in enumerate(models.items()):
        options = make_options()
        options.enable_profiling = True
        options.profile_file_prefix = str(work / f"profile{i}")
        sessions[name] = make_session(path, options)
    for _ in range(1 + passes):
        for batch in batches:
            for session in sessions.values():
                session.run(None, batch.inputs)
    out = {}
    for name, session in sessions.items():
        events = json.loads(Path(session.end_profiling()).read_text())
        times, runs = op_times(events, skip_runs=len(batches))
        out[name] = {op: us / 1000 / max(1, runs) for op, us in times.most_common()}
    return out


def amdahl(fp32_ms: float, ops: dict[str, float], target: float) -> dict:
    """A quantized profile split into int8 and fp32 parts, and what `target` would take."""
    int8 = sum(ms for op, ms in ops.items() if is_int8(op))
    rest = sum(ms for op, ms in ops.items() if not is_int8(op))
    budget = fp32_ms / target - rest  # what the int8 part may take for `target`
    return {
        "total_ms": int8 + rest,
        "int8_ms": int8,
        "fp32_rest_ms": rest,
        "kernel_speedup": fp32_ms / (int8 + rest),
        "cap": fp32_ms / rest if rest > 0 else float("inf"),
        "int8_faster_needed": int8 / budget if budget > 0 else None,  # None: out of reach
    }


def run_benchmark(
    task,
    only: list[str] | None,
    target: float,
    passes: int,
    seconds: float = 4.0,
    progress=print,
) -> dict:
    """Profiles of fp32 and each chosen config, their Amdahl split, and their wall-clock
    speedups timed as `node_scopes` times them (`passes` rounds of `seconds` each)."""
    from search.calibrate import CalibrationCache

    configs = select(candidates(fusion=True), only or ["weight MatMuls, per-tensor"])
    batches = list(task.timing_batches)
    with tempfile.TemporaryDirectory() as work:
        models = {FP32: (task.model_path, make_session_options)}
        cache = CalibrationCache(task)
        for i, (name, config) in enumerate(configs.items()):
            progress(f"quantizing {name}")
            path = quantize(config, task.model_path, Path(work) / str(i), cache.ranges(config))
            models[name] = (path, config.session_options)
        progress(f"profiling {len(models)} models, round-robin")
        profiled = profiles(models, batches, passes, Path(work))
        progress("timing them without the profiler, round-robin")
        sessions = {name: make_session(path, options()) for name, (path, options) in models.items()}
        fp32 = sessions.pop(FP32)
        wall = round_robin(fp32, sessions, batches, passes, seconds, progress)
    fp32_ms = sum(profiled[FP32].values())
    fp32_gemm = sum(ms for op, ms in profiled[FP32].items() if op in GEMMS)
    rows = []
    for name in configs:
        ops = profiled[name]
        left_gemm = sum(ms for op, ms in ops.items() if op in GEMMS)
        split = amdahl(fp32_ms, ops, target)
        # the fp32 products the config replaced: fp32's products less those it left fp32
        replaced = fp32_gemm - left_gemm
        split["int8_vs_replaced_gemms"] = replaced / split["int8_ms"] if split["int8_ms"] else None
        speed = pooled_rounds(wall[name])["speedup"]
        rows.append({"config": name, "wall_speedup": speed, **split, "ops": ops})
    return {
        "cpu": describe_worker(worker_info()),
        "target": target,
        "batches": len(batches),
        "passes": passes,
        "fp32_ms": fp32_ms,
        "fp32_ops": profiled[FP32],
        "rows": rows,
    }


def print_result(result: dict, top: int = 8) -> None:
    print(
        f"CPU: {result['cpu']}; {result['batches']} batches x {result['passes']} passes; "
        f"fp32 {result['fp32_ms']:.1f} ms per batch (kernel time)"
    )
    for row in result["rows"]:
        needed = row["int8_faster_needed"]
        reach = (
            "out of reach with this fp32 part"
            if needed is None
            else f"int8 part {needed:.2f}x faster than it runs"
        )
        ratio = row["int8_vs_replaced_gemms"]
        print(
            f"\n{row['config']}: {row['total_ms']:.1f} ms per batch, kernel speedup "
            f"{row['kernel_speedup']:.2f}x, wall {row['wall_speedup']:.2f}x\n"
            f"  int8 part {row['int8_ms']:.1f} ms"
            + (f" ({ratio:.2f}x the fp32 products it replaced)" if ratio else "")
            + f", fp32 part {row['fp32_rest_ms']:.1f} ms: no config leaving it fp32 beats "
            f"{row['cap']:.2f}x; {result['target']:g}x needs the {reach}"
        )
        print(f"  {'operator':<26} {'ms/batch':>9} {'share':>6} {'fp32 ms':>8}")
        for op, ms in list(row["ops"].items())[:top]:
            fp32 = result["fp32_ops"].get(op)
            was = f"{fp32:8.1f}" if fp32 is not None else f"{'':>8}"
            kind = "int8" if is_int8(op) else "fp32"
            print(f"  {op:<21} {kind:>4} {ms:9.2f} {100 * ms / row['total_ms']:5.1f}% {was}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only",
        action="append",
        help="profile rows of benchmarks/node_scopes.py whose name starts with this "
        "(repeatable; default: weight MatMuls, per-tensor)",
    )
    parser.add_argument("--target", type=float, default=2.75, help="speedup to work back from")
    parser.add_argument(
        "--passes", type=int, default=3, help="profiled passes over the batches, and timed rounds"
    )
    parser.add_argument(
        "--seconds", type=float, default=4.0, help="wall timing per model and round"
    )
    args = parser.parse_args()
    quiet_libraries()
    from search.tasks.default import default_task

    result = run_benchmark(
        default_task(),
        args.only,
        args.target,
        args.passes,
        args.seconds,
        lambda m: print(m, file=sys.stderr),
    )
    print_result(result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
