"""The best configs of several studies of one task, timed side by side in one run.

Why: two searches run minutes or hours apart (say a static beam and the accuracy-driven
fallback on a static space) each report speedups measured in their own minutes, and the
machine's drift between those minutes can be as large as the difference between their
answers. Here the fastest configs within `--max-drop` of fp32 of every study (by the study's
own pooled speedup, `search.results.trial_rows`; `--mode` keeps one quantization mode, `--top`
how many per study) are re-timed together in `--rounds` confirmation rounds
(`search.confirm.confirmation_round`, the search's own: every config against fp32 in one
interleaved run, taking turns a block at a time), each config's rounds pooled
(`search.pooled.pool`), and each config compared with the first study's best by the ratio
measured in the same rounds (`search.pooled.same_round_interval`: the drift cancels there).
Accuracy is each trial's own (scoring is deterministic). The studies are only read. Prints a
table and one JSON line.

`--study NAME:STRATEGY` keeps the trials one strategy proposed (`beam4`, `fallback`, `seed`,
...; a trial's `strategy` attribute) and `NAME:-STRATEGY` all the others, so a search
continued by another strategy in the same study (a static beam, then `--fallback` from its
fastest config) is compared with what it found before (`make bench-static`).

    .venv/bin/python benchmarks/side_by_side.py --study zen4-static-beam4 \\
        --study zen4-static-fallback --mode static --top 2 --rounds 6 --seconds 10
    .venv/bin/python benchmarks/side_by_side.py --study static-beam4:-fallback \\
        --study static-beam4:fallback --mode static --top 3
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from search.config import QuantConfig  # noqa: E402
from search.confirm import confirmation_round  # noqa: E402
from search.errors import QsearchError  # noqa: E402
from search.measure import TimingSettings  # noqa: E402
from search.pooled import block, pool, same_round_interval  # noqa: E402
from search.quantize import quiet_libraries  # noqa: E402
from search.ranking import within_drop  # noqa: E402
from search.worker import describe_worker, worker_info  # noqa: E402


def split_name(spec: str) -> tuple[str, str | None]:
    """`NAME[:STRATEGY]` -> (study name, strategy filter or None); a study name holds no `:`."""
    name, colon, strategy = spec.partition(":")
    if not colon:
        return name, None
    if strategy in ("", "-"):
        raise QsearchError(
            f"--study {spec!r} names no strategy after ':'; write NAME, NAME:STRATEGY (that "
            f"strategy's trials, e.g. {name}:fallback) or NAME:-STRATEGY (all the others)"
        )
    return name, strategy


def _proposed_by(trial, strategy: str | None) -> bool:
    if strategy is None:
        return True
    if strategy.startswith("-"):
        return trial.user_attrs.get("strategy") != strategy[1:]
    return trial.user_attrs.get("strategy") == strategy


def picks(
    study, max_drop: float, mode: str | None, top: int, strategy: str | None = None
) -> list[dict]:
    """The study's fastest `top` configs within `max_drop` of fp32 (pooled speedups), among
    the trials `strategy` proposed (see the module docstring)."""
    from search.results import trial_rows

    rows = trial_rows(study)
    fp32 = study.user_attrs.get("fp32_accuracy")
    if rows.empty or fp32 is None:
        return []
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    rows = rows[within_drop(rows["accuracy"], fp32, max_drop)]
    rows = rows[[_proposed_by(trials[int(n)], strategy) for n in rows["trial"]]]
    if mode:
        rows = rows[rows["mode"] == mode]
    rows = rows.sort_values("speedup", ascending=False).head(top)
    label = study.study_name + ("" if strategy is None else f":{strategy}")
    return [
        {
            "study": label,
            "trial": int(r.trial),
            "accuracy": float(r.accuracy),
            "drop_points": float(r.drop_points),
            "study_speedup": float(r.speedup),
            "config": QuantConfig.from_dict(trials[int(r.trial)].user_attrs["config"]),
        }
        for r in rows.itertuples()
    ]


def _same_task(studies) -> None:
    models = {s.study_name: s.user_attrs.get("task", {}).get("model_sha256") for s in studies}
    if len(set(models.values())) > 1:
        raise QsearchError(
            f"--study must name studies of one model to compare them, but their models' "
            f"hashes differ: {models}"
        )


def time_side_by_side(evaluator, configs: list[QuantConfig], rounds: int, seconds: float):
    """`rounds` confirmation rounds of all `configs` (order rotated one place a round): each
    config's pooled speedup, and each round's log ratio per config (None where it failed)."""
    blocks: list[list[dict]] = [[] for _ in configs]
    logs: list[list[float | None]] = []
    errors: dict[int, str] = {}
    try:
        for r in range(rounds):
            speeds = confirmation_round(evaluator, configs, r, seconds)
            row: list[float | None] = [None] * len(configs)
            for i, s in enumerate(speeds):
                if isinstance(s, str):
                    errors[i] = s
                    continue
                blocks[i].append(block(s, "round"))
                row[i] = math.log(s.ratio)
            logs.append(row)
    finally:
        evaluator.end_rounds()
    pooled = [pool(b) if b else None for b in blocks]
    return pooled, logs, errors


def run_benchmark(
    study_names: list[str],
    storage: str | None,
    max_drop: float,
    mode: str | None,
    top: int,
    rounds: int,
    seconds: float,
    timing: TimingSettings | None = None,
) -> dict:
    from search.objective import Evaluator
    from search.settings import task_for_study
    from search.study import load_study

    specs = [split_name(spec) for spec in study_names]
    studies = [load_study(name, storage) for name, _ in specs]
    _same_task(studies)
    chosen = [
        p
        for s, (_, strategy) in zip(studies, specs, strict=True)
        for p in picks(s, max_drop, mode, top, strategy)
    ]
    if not chosen:
        raise QsearchError(
            f"the studies must hold a measured {mode or ''} config within {max_drop} of fp32 "
            f"to compare, but none of {study_names} does"
        )
    evaluator = Evaluator(task_for_study(studies[0]), timing or TimingSettings())
    try:
        pooled, logs, errors = time_side_by_side(
            evaluator, [p["config"] for p in chosen], rounds, seconds
        )
    finally:
        evaluator.close()
    index = list(range(len(chosen)))
    rows = []
    for i, p in enumerate(chosen):
        ratio = same_round_interval(index, logs, i, 0)
        rows.append(
            {
                **{k: v for k, v in p.items() if k != "config"},
                "config": p["config"].describe(),
                "speedup": None if pooled[i] is None else pooled[i].to_dict(),
                "vs_first": None if ratio is None else [round(x, 4) for x in ratio],
                "error": errors.get(i),
            }
        )
    return {
        "benchmark": "side_by_side",
        "cpu": describe_worker(worker_info()),
        "studies": study_names,
        "max_drop": max_drop,
        "mode": mode,
        "rounds": rounds,
        "seconds_per_config": seconds,
        "rows": rows,
    }


def print_result(result: dict) -> None:
    print(f"CPU: {result['cpu']}")
    print(
        f"{result['rounds']} rounds x {result['seconds_per_config']} s per config, side by side; "
        f"'vs first' = ratio to the first row, from the same rounds [95%]"
    )
    head = f"{'study':28s} {'trial':>5s} {'pts':>6s} {'study':>7s} {'side by side':>22s} "
    print(head + f"{'vs first':>22s}  config")
    for r in result["rows"]:
        s = r["speedup"]
        side = "failed" if s is None else f"{s['speedup']:.3f}x [{s['low']:.3f}-{s['high']:.3f}]"
        v = r["vs_first"]
        vs = "" if v is None else f"{v[0]:.3f} [{v[1]:.3f}-{v[2]:.3f}]"
        print(
            f"{r['study']:28s} {r['trial']:5d} {-r['drop_points']:+6.2f} "
            f"{r['study_speedup']:6.3f}x {side:>22s} {vs:>22s}  {r['config']}"
        )
    print(json.dumps(result))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--study",
        action="append",
        required=True,
        help="repeat for each study; NAME:STRATEGY keeps that strategy's trials, "
        "NAME:-STRATEGY the others",
    )
    parser.add_argument("--storage", help="one RDB URL holding them all (default: each its own)")
    parser.add_argument("--max-drop", type=float, default=0.01)
    parser.add_argument("--mode", choices=["static", "dynamic"], help="keep one mode's configs")
    parser.add_argument("--top", type=int, default=1, help="configs per study")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=10.0, help="timing per config a round")
    args = parser.parse_args(argv)
    quiet_libraries()
    try:
        result = run_benchmark(
            args.study, args.storage, args.max_drop, args.mode, args.top, args.rounds, args.seconds
        )
    except QsearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_result(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
