"""Blockwise weight-only quantization (onnxruntime's MatMulNBits, the LLM recipe: int4 or int8
weights in blocks, activations quantized to int8 inside the kernel with `accuracy_level` 4)
against qsearch's dynamic int8 weight MatMuls, side by side on the default task.

Why (issue 13): MatMulNBits has kernels written for AVX512-VNNI, and its block scales keep
int4 weights accurate, so it was the one int8 path left untried for the bar. It is not in
qsearch's space: these kernels are built for the few rows of a language model's decoding,
and an encoder's batch (32 sentences of ~52 tokens: ~1,700 rows per product) is the other
end of that. This benchmark is what keeps that decision honest on each CPU.

Each candidate is timed against fp32 on the same batches, round-robin (`--rounds` rounds of
`--seconds` each), as `benchmarks/node_scopes.py` does; accuracy is on the task's evaluation
set. Prints a table and one JSON line.

    .venv/bin/python benchmarks/weight_only.py --rounds 3 --seconds 8
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # node_scopes, also when imported

from node_scopes import candidates, pooled_rounds, round_robin  # noqa: E402

from search.config import make_session_options  # noqa: E402
from search.measure import make_session  # noqa: E402
from search.quantize import quantize, quiet_libraries  # noqa: E402
from search.worker import describe_worker, worker_info  # noqa: E402

REFERENCE = "weight MatMuls, per-tensor"  # node_scopes' row: dynamic int8, the best on VNNI
VARIANTS = ((4, 32), (8, 32), (8, 128))  # (bits, block size)


def weight_only(model: Path, out: Path, bits: int, block: int, accuracy_level: int = 4) -> Path:
    """`model` with every MatMul of a constant weight as MatMulNBits (symmetric, round to
    nearest); `accuracy_level` 4 computes in int8."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    config = DefaultWeightOnlyQuantConfig(
        block_size=block, is_symmetric=True, accuracy_level=accuracy_level, bits=bits
    )
    quantizer = MatMulNBitsQuantizer(
        onnx.load(str(model)),
        block_size=block,
        is_symmetric=True,
        accuracy_level=accuracy_level,
        algo_config=config,
    )
    quantizer.process()
    quantizer.model.save_model_to_file(str(out), False)
    return out


def run_benchmark(task, rounds: int, seconds: float, variants=VARIANTS, progress=print) -> dict:
    """Accuracy and round-robin speedup over fp32 of the reference and each variant."""
    from search.calibrate import CalibrationCache

    fp32 = make_session(task.model_path, make_session_options())
    fp32_outputs = task.outputs(fp32)
    fp32_accuracy = task.score(fp32_outputs)
    config = candidates()[REFERENCE]
    with tempfile.TemporaryDirectory() as work:
        path = quantize(
            config, task.model_path, Path(work) / "ref", CalibrationCache(task).ranges(config)
        )
        sessions = {REFERENCE: make_session(path, config.session_options())}
        for bits, block in variants:
            name = f"MatMulNBits int{bits} weights, blocks of {block}, int8 compute"
            out = weight_only(
                task.model_path, Path(work) / f"nbits{bits}_{block}.onnx", bits, block
            )
            sessions[name] = make_session(out, config.session_options())
        accuracy = {n: task.score(task.outputs(s), fp32_outputs) for n, s in sessions.items()}
        ratios = round_robin(fp32, sessions, task.timing_batches, rounds, seconds, progress)
    rows = []
    for name, values in ratios.items():
        drop = 100 * (fp32_accuracy - accuracy[name])
        rows.append({"config": name, "drop_points": drop, **pooled_rounds(values)})
    return {
        "cpu": describe_worker(worker_info()),
        "fp32_accuracy": fp32_accuracy,
        "rounds": rounds,
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0, help="timing per candidate/round")
    args = parser.parse_args()
    quiet_libraries()
    from search.tasks.default import default_task

    result = run_benchmark(
        default_task(), args.rounds, args.seconds, progress=lambda m: print(m, file=sys.stderr)
    )
    print(
        f"CPU: {result['cpu']}; fp32 accuracy {result['fp32_accuracy']:.4f}; "
        f"{args.rounds} rounds x {args.seconds:g} s, round-robin"
    )
    width = max(len(row["config"]) for row in result["rows"])
    print(f"{'config':<{width}} {'drop pts':>9} {'speedup':>8} {'95% interval':>16}")
    for row in result["rows"]:
        interval = f"[{row['low']:.2f}-{row['high']:.2f}]"
        print(
            f"{row['config']:<{width}} {row['drop_points']:>9.1f} "
            f"{row['speedup']:>7.2f}x {interval:>16}"
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
