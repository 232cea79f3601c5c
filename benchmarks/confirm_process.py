"""Does the search's long-lived trial process time slower than a fresh one? A confirmation in
the search's child process against one in a fresh process, in the same minutes.

Why (issue 14): on a 2-core Intel Xeon the end-of-search confirmations, timed in the search's
long-lived child (`search.isolation.IsolatedEvaluator`), read ~6% low for every config alike,
while `qsearch measure` in a fresh process read the same configs higher. Either that process
had aged (heap, thread pools, the fp32 session it has held since the first trial, the open
round sessions) or those minutes were slow. Timing both in the same minutes tells which.

Two arms, both the search's real child process and code (`Evaluator.retime_round`, as
`search.confirm` calls it):

- aged: one child that first evaluates --trials trials the way a search does (`evaluate` on
  varied configs, a static one among them so calibration runs, scoring at every core), then
  times every round in that same child (new sessions each round: the search's confirmation
  before `search.confirm.FRESH_PROCESS`);
- fresh: a new child per round, started just before its round and closed after it, that has
  done nothing else (what the search's confirmation does since).

Round r times the configs in both arms, aged first in even rounds and fresh first in odd
ones (ABBA), each config --seconds against fp32, starting one config further along each
round. Per config, the ratio aged / fresh of the speedups, and of fp32's and the candidate's
samples/s separately, is paired within a round; its geometric mean over rounds and a 95%
t-interval across rounds (`search.stats.block_estimate`) say whether the gap is real and
which side (fp32 faster, or the candidate slower) it comes from. Prints a table and one JSON
line.

    .venv/bin/python benchmarks/confirm_process.py --rounds 5 --seconds 10 --trials 6
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from search.config import QuantConfig  # noqa: E402
from search.confirm import confirmation_round  # noqa: E402
from search.errors import TrialError, TrialOutcome  # noqa: E402
from search.measure import Speedup, TimingSettings  # noqa: E402
from search.quantize import quiet_libraries  # noqa: E402
from search.stats import block_estimate  # noqa: E402
from search.worker import describe_worker, worker_info  # noqa: E402

FUSION_OFF = ("SkipLayerNormFusion",)
ARMS = ("aged", "fresh")
MEASURES = ("speedup", "baseline_sps", "candidate_sps")


def candidates() -> dict[str, QuantConfig]:
    """Three dynamic configs near the default task's frontier (the seeds' recipes)."""
    base = QuantConfig(
        operators=("MatMul",), per_channel=True, disabled_fusions=FUSION_OFF, matmul_scope="weights"
    )
    return {
        "weight MatMuls, per-channel": base,
        "weight MatMuls, per-tensor": base.replace(per_channel=False),
        "weight MatMuls + Gather, per-channel": base.replace(operators=("Gather", "MatMul")),
    }


def aging_configs() -> list[QuantConfig]:
    """What the aged child evaluates before the rounds: a search's mix of trials, a static
    one (calibration, a QDQ graph) second so even a short run includes it; cycled."""
    base = QuantConfig(operators=("MatMul",), disabled_fusions=FUSION_OFF)
    return [
        base,
        QuantConfig(mode="static", format="QDQ", operators=("MatMul",), calibration="minmax"),
        base.replace(per_channel=True, matmul_scope="weights"),
        base.replace(disabled_fusions=()),
        base.replace(operators=("Gather", "MatMul"), per_channel=True),
        base.replace(per_channel=True),
    ]


def age(evaluator, trials: int, progress: Callable[[str], None]) -> list[str]:
    """Evaluate `trials` configs in `evaluator` as a search would; each one's outcome."""
    configs = aging_configs()
    outcomes = []
    for i in range(trials):
        config = configs[i % len(configs)]
        started = time.perf_counter()
        try:
            result = evaluator.evaluate(config)
            outcome = f"{result.speedup:.3f}x"
        except TrialOutcome as exc:  # pruned or same graph: a search's trials end so too
            outcome = type(exc).__name__
        except TrialError as exc:
            outcome = f"failed: {exc}"
        outcomes.append(outcome)
        progress(
            f"aging trial {i + 1}/{trials}: {config.describe()}: {outcome} "
            f"({time.perf_counter() - started:.0f} s)"
        )
    return outcomes


def _row(speed: Speedup | str, name: str) -> dict:
    if isinstance(speed, str):
        raise RuntimeError(f"{name} failed: {speed}")
    return {
        "speedup": speed.ratio,
        "baseline_sps": speed.baseline_sps,
        "candidate_sps": speed.candidate_sps,
        "pairs": speed.pairs,
        "other_load": speed.other_load,
        "loaded": speed.loaded,
    }


def timed_round(
    evaluator, names: list[str], configs: list[QuantConfig], r: int, seconds: float, aged: bool
):
    """One round in `evaluator`, starting at config r (mod n): each config's figures. The
    aged arm keeps its child (the search's confirmation before it started a new one,
    `search.confirm.FRESH_PROCESS`); the fresh arm's evaluator is new each round."""
    speeds = confirmation_round(evaluator, configs, r, seconds)
    return {n: _row(speed, n) for n, speed in zip(names, speeds, strict=True)}


def child_state(evaluator) -> dict:
    """The child's threads and resident memory (from /proc): leftover thread pools or a
    grown heap would show here, whatever the timing says."""
    process = getattr(evaluator, "_process", None)
    fields = {}
    try:
        for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            fields[key] = value.split()[0] if value.split() else ""
    except (AttributeError, OSError, TypeError):
        return {}
    return {"threads": int(fields.get("Threads", 0)), "rss_mb": int(fields.get("VmRSS", 0)) / 1024}


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def compare(names: list[str], rounds: list[dict[str, dict[str, dict]]]) -> dict:
    """Per config and measure: aged / fresh, paired within each round; the geometric mean
    over rounds with its 95% t-interval across rounds (None where one round gives none)."""
    out: dict[str, dict] = {}
    for name in names:
        out[name] = {}
        for measure in MEASURES:
            logs = [math.log(r["aged"][name][measure] / r["fresh"][name][measure]) for r in rounds]
            est = block_estimate(logs)
            out[name][measure] = {
                "ratio": est.ratio,
                "low": _finite(est.low),
                "high": _finite(est.high),
                "aged": _geomean([r["aged"][name][measure] for r in rounds]),
                "fresh": _geomean([r["fresh"][name][measure] for r in rounds]),
            }
    # every config's rounds together: whether the gap is common to all configs
    for measure in MEASURES:
        logs = [
            sum(math.log(r["aged"][n][measure] / r["fresh"][n][measure]) for n in names)
            / len(names)
            for r in rounds
        ]
        est = block_estimate(logs)
        out.setdefault("all configs", {})[measure] = {
            "ratio": est.ratio,
            "low": _finite(est.low),
            "high": _finite(est.high),
        }
    return out


def _cv(values: list[float]) -> float:
    """How much one arm's readings of a config move from round to round: the aged arm keeps
    one process and its sessions, the fresh arm draws a new process each round."""
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) / mean


def _geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def run_benchmark(
    task,
    rounds: int,
    seconds: float,
    trials: int,
    timing: TimingSettings | None = None,
    progress: Callable[[str], None] = print,
) -> dict:
    """Age one child, then `rounds` ABBA rounds of aged against fresh children (see the
    module docstring); the comparison and the raw rounds."""
    from search.isolation import IsolatedEvaluator

    timing = timing or TimingSettings(target=1e-9)  # every slot times its full seconds
    configs = candidates()
    names, values = list(configs), list(configs.values())
    started = time.perf_counter()
    aged = IsolatedEvaluator(task, timing)
    raw: list[dict] = []
    try:
        outcomes = age(aged, trials, progress)
        aged_after_trials = child_state(aged)
        allocator = aged.call("steady_allocator")  # the fix of issue 14 (search.measure)
        for r in range(rounds):
            row: dict = {"round": r, "first": ARMS[r % 2]}
            for arm in ARMS if r % 2 == 0 else ARMS[::-1]:
                if arm == "aged":
                    row[arm] = timed_round(aged, names, values, r, seconds, aged=True)
                    row["aged_child"] = child_state(aged)
                    continue
                fresh = IsolatedEvaluator(task, timing)
                try:
                    row[arm] = timed_round(fresh, names, values, r, seconds, aged=False)
                    row["fresh_child"] = child_state(fresh)
                finally:
                    fresh.close()
            raw.append(row)
            progress(
                f"round {r + 1}/{rounds} ({row['first']} first): "
                + "; ".join(
                    f"{n}: aged {row['aged'][n]['speedup']:.3f}x fresh "
                    f"{row['fresh'][n]['speedup']:.3f}x"
                    for n in names
                )
            )
        aged.end_rounds()
    finally:
        aged.close()
    loads = [c["other_load"] for r in raw for a in ARMS for c in r[a].values()]
    return {
        "benchmark": "confirm_process",
        "cpu": describe_worker(worker_info()),
        "worker": worker_info(),
        "task": task.name,
        "configs": {n: c.describe() for n, c in configs.items()},
        "rounds": rounds,
        "seconds_per_config": seconds,
        "aging_trials": trials,
        "aging_outcomes": outcomes,
        "steady_allocator": allocator,
        "aged_child_after_trials": aged_after_trials,
        "children_after_rounds": {
            arm: [r[f"{arm}_child"] for r in raw if r.get(f"{arm}_child")] for arm in ARMS
        },
        "mean_other_load": sum(loads) / len(loads) if loads else 0.0,
        "loaded_measurements": sum(c["loaded"] for r in raw for a in ARMS for c in r[a].values()),
        "aged_over_fresh": compare(names, raw),
        "speedup_cv_across_rounds": {
            arm: {n: _cv([r[arm][n]["speedup"] for r in raw]) for n in names} for arm in ARMS
        },
        "wall_seconds": round(time.perf_counter() - started, 1),
        "raw": raw,
    }


def _interval(x: dict) -> str:
    if x["low"] is None:
        return f"{x['ratio']:.4f} (one round: no interval)"
    return f"{x['ratio']:.4f} [{x['low']:.4f}, {x['high']:.4f}]"


def print_result(result: dict) -> None:
    """The table (aged / fresh per config and measure, 95% interval across rounds), then the
    JSON line (without the raw rounds)."""
    print(
        f"CPU: {result['cpu']}; task {result['task']}; {result['rounds']} rounds x "
        f"{result['seconds_per_config']:g} s per config and arm; aged child after "
        f"{result['aging_trials']} trials; other processes' load {result['mean_other_load']:.2f} "
        f"cores on average, {result['loaded_measurements']} measurements flagged loaded; "
        f"glibc mmap threshold fixed (search.measure.steady_allocator): "
        f"{result['steady_allocator']}"
    )
    states = result["children_after_rounds"]
    described = ", ".join(
        f"{arm} {s['threads']} threads {s['rss_mb']:.0f} MB"
        for arm in ARMS
        for s in states.get(arm, [])[-1:]
    )
    after = result["aged_child_after_trials"]
    if after:
        print(
            f"aged child after its trials: {after['threads']} threads, {after['rss_mb']:.0f} MB; "
            f"after the last round: {described}"
        )
    header = f"{'config':<40} {'measure':<14} {'aged':>9} {'fresh':>9}  aged / fresh [95%]"
    print(header)
    print("-" * len(header))
    for name, per in result["aged_over_fresh"].items():
        for measure in MEASURES:
            x = per[measure]
            aged = f"{x['aged']:9.3f}" if "aged" in x else " " * 9
            fresh = f"{x['fresh']:9.3f}" if "fresh" in x else " " * 9
            print(f"{name:<40} {measure:<14} {aged} {fresh}  {_interval(x)}")
    cv = result["speedup_cv_across_rounds"]
    for name in cv[ARMS[0]]:
        spread = ", ".join(f"{arm} {100 * cv[arm][name]:.2f}%" for arm in ARMS)
        print(f"speedup CV across rounds, {name}: {spread}")
    print(json.dumps({k: v for k, v in result.items() if k != "raw"}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=10.0, help="per config, round and arm")
    parser.add_argument("--trials", type=int, default=6, help="trials the aged child runs first")
    parser.add_argument(
        "--trial-seconds", type=float, default=12.0, help="timing per aging trial (a search's)"
    )
    parser.add_argument("--save", type=Path, help="write the whole result, raw rounds too")
    args = parser.parse_args()
    quiet_libraries()
    from search.tasks.default import default_task

    result = run_benchmark(
        default_task(),
        args.rounds,
        args.seconds,
        args.trials,
        TimingSettings(seconds=args.trial_seconds, target=1e-9),
        progress=lambda m: print(m, file=sys.stderr, flush=True),
    )
    if args.save:
        args.save.write_text(json.dumps(result, indent=1))
    print_result(result)


if __name__ == "__main__":
    main()
