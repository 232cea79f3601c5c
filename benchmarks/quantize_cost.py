"""What does quantizing one config cost, before and after the shape-inferred copy
(`search.inferred`) and the reuse of per-channel weights (`search.channel_weights`)?

"Before" is `search.quantize.quantize` as it was: Optimum pointed at a folder holding a link
to the model, onnxruntime shape-inferring it in every call (twice for dynamic quantization)
and quantizing every weight per channel afresh. "After" is the function as shipped. Both run
in one process on the same model, taking turns config by config, after one untimed warm-up
round (which makes the copies and sees the weights once, as a search's first trial does);
each call's output is hashed, and the two must write the same bytes.

Prints a table (median seconds per way, their ratio, same bytes) and one JSON line.

    .venv/bin/python benchmarks/quantize_cost.py                  # the default task's model
    .venv/bin/python benchmarks/quantize_cost.py --model path/to/model.onnx --rounds 3
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from search.config import QuantConfig  # noqa: E402
from search.quantize import optimum_config, quantize, quiet_libraries  # noqa: E402
from search.worker import describe_worker, worker_info  # noqa: E402

FUSION_OFF = ("SkipLayerNormFusion",)
CONFIGS = {
    "dynamic, weight MatMuls": QuantConfig(
        operators=("MatMul",), matmul_scope="weights", disabled_fusions=FUSION_OFF
    ),
    "dynamic, weight MatMuls, per-channel": QuantConfig(
        operators=("MatMul",), matmul_scope="weights", per_channel=True
    ),
    "dynamic, MatMul + Gather": QuantConfig(operators=("Gather", "MatMul")),
}


def quantize_before(config: QuantConfig, fp32_model: Path, out_dir: Path) -> Path:
    """`search.quantize.quantize` before the shape-inferred copy (dynamic configs)."""
    from optimum.onnxruntime import ORTQuantizer

    quiet_libraries()
    fp32_model = Path(fp32_model).resolve()
    source = out_dir.parent / f".{out_dir.name}-source"
    source.mkdir(parents=True, exist_ok=True)
    try:
        (source / fp32_model.name).symlink_to(fp32_model)
        quantizer = ORTQuantizer.from_pretrained(source, file_name=fp32_model.name)
        quantizer.quantize(quantization_config=optimum_config(config, fp32_model), save_dir=out_dir)
    finally:
        shutil.rmtree(source, ignore_errors=True)
    return out_dir / f"{fp32_model.stem}_quantized.onnx"


WAYS = {
    "before": quantize_before,
    "after": lambda config, model, out: quantize(config, model, out),
}


def measure(model: Path, rounds: int, configs: dict[str, QuantConfig]) -> list[dict]:
    """Per config: each way's seconds per call over `rounds` timed rounds, and whether every
    call of both ways wrote the same bytes."""
    work = Path(tempfile.mkdtemp(prefix="quantize-cost-"))
    seconds = {(name, way): [] for name in configs for way in WAYS}
    hashes = {name: set() for name in configs}
    try:
        for r in range(rounds + 1):  # round 0: the warm-up, untimed
            for name, config in configs.items():
                ways = list(WAYS) if r % 2 else list(reversed(WAYS))
                for way in ways:
                    out = work / f"{r}-{way}-{config.key}"
                    begun = time.perf_counter()
                    path = WAYS[way](config, model, out)
                    took = time.perf_counter() - begun
                    hashes[name].add(hashlib.sha256(path.read_bytes()).hexdigest())
                    shutil.rmtree(out, ignore_errors=True)
                    if r:
                        seconds[(name, way)].append(took)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    for name in configs:
        before = statistics.median(seconds[(name, "before")])
        after = statistics.median(seconds[(name, "after")])
        rows.append(
            {
                "config": name,
                "before_s": round(before, 3),
                "after_s": round(after, 3),
                "ratio": round(after / before, 3),
                "same_bytes": len(hashes[name]) == 1,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="an ONNX model (default: the default task's)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds after a warm-up")
    args = parser.parse_args(argv)
    model = args.model
    if model is None:
        from search.tasks.default import default_task_dir

        model = default_task_dir() / "model.onnx"
    if not Path(model).is_file():
        print(f"error: --model must be an ONNX file, but {model} is not one", file=sys.stderr)
        return 2
    rows = measure(Path(model), args.rounds, CONFIGS)
    cpu = describe_worker(worker_info(1))
    size = Path(model).stat().st_size / 1e6
    print(f"Quantizing {model} ({size:.1f} MB), {args.rounds} rounds, {cpu}")
    print(f"{'config':<40} {'before s':>9} {'after s':>8} {'ratio':>6} same bytes")
    for r in rows:
        print(
            f"{r['config']:<40} {r['before_s']:>9.3f} {r['after_s']:>8.3f} {r['ratio']:>6.2f} "
            f"{'yes' if r['same_bytes'] else 'NO'}"
        )
    line = {"benchmark": "quantize_cost", "model_mb": round(size, 1), "cpu": cpu, "rows": rows}
    print(json.dumps(line))
    return 0 if all(r["same_bytes"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
