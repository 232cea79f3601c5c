"""What does one trial cost, phase by phase, and what do cheap trials save?

On the default task, runs N trials of each kind through qsearch's evaluator as a search runs
them (one evaluator for the run, calibration ranges cached, the frontier so far passed as
context) and, side by side, through a naive pipeline that does everything afresh each trial,
as the seed did: fresh calibration, full accuracy, fixed-length timing (no target, no racing).

Kinds: dynamic (U8S8 MatMul), static (QDQ U8S8 MatMul, minmax), collapsed (static QDQ of
MatMul, LayerNormalization and Softmax with percentile-99.9 calibration: the worst of 12
static configs tried on the default task, 0.65 on the first 125 examples against fp32's 0.81;
none fell to chance with onnxruntime 1.32) and same-graph (a config whose quantized file
equals one measured before: Conv is not in the model).

Prints a table of median seconds per phase and one JSON line with the ratios (median trial /
naive median trial, collapsed / full dynamic trial).

    .venv/bin/python benchmarks/trial_cost.py --trials 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from search.calibrate import CalibrationCache  # noqa: E402
from search.config import QuantConfig, make_session_options  # noqa: E402
from search.context import TrialContext  # noqa: E402
from search.early import PruneSettings  # noqa: E402
from search.errors import SameGraph, TrialPruned  # noqa: E402
from search.interleave import paired_speedup  # noqa: E402
from search.measure import TimingSettings, make_session  # noqa: E402
from search.objective import Evaluator  # noqa: E402
from search.quantize import quantize, quiet_libraries  # noqa: E402
from search.trial_kind import EVALUATIONS, TrialKind, is_reference, trial_kind  # noqa: E402
from search.worker import describe_worker, worker_info  # noqa: E402

PHASES = ("calibrate", "quantize", "accuracy", "load", "timing")
KINDS = {
    "dynamic": QuantConfig(operators=("MatMul",)),
    "static": QuantConfig(mode="static", format="QDQ", operators=("MatMul",)),
    "collapsed": QuantConfig(
        mode="static",
        format="QDQ",
        operators=("LayerNormalization", "MatMul", "Softmax"),
        calibration="percentile",
        percentile=99.9,
    ),
    "same-graph": QuantConfig(operators=("Conv", "MatMul")),  # no Conv: the dynamic graph
}


def naive_trial(task, config: QuantConfig, timing: TimingSettings, work: Path) -> dict:
    """The seed's trial: calibrate afresh, quantize, score every example, time for the whole
    budget (the paired measurement without a target or racing)."""
    phases = {}
    t = time.perf_counter()
    ranges = CalibrationCache(task, directory=None).ranges(config)
    phases["calibrate"] = time.perf_counter() - t
    t = time.perf_counter()
    path = quantize(config, task.model_path, work / f"naive-{time.monotonic_ns()}", ranges)
    phases["quantize"] = time.perf_counter() - t
    options = make_session_options(threads=timing.threads)
    session = make_session(path, options)
    t = time.perf_counter()
    task.score(task.outputs(session))
    phases["accuracy"] = time.perf_counter() - t
    t = time.perf_counter()
    fixed = TimingSettings(seconds=timing.seconds, target=0.0, warmup_runs=2)
    paired_speedup(make_session(task.model_path, options), session, task.timing_batches, fixed)
    phases["timing"] = time.perf_counter() - t
    return phases


def qsearch_trial(evaluator: Evaluator, config: QuantConfig, context: TrialContext):
    """(phase seconds, outcome, result or None) of one trial through the evaluator."""
    try:
        result = evaluator.evaluate(config, context)
    except SameGraph as same:
        return same.attrs["phase_seconds"], "same graph", None
    except TrialPruned as pruned:
        return pruned.attrs["phase_seconds"], "pruned", None
    outcome = "raced" if result.attrs["timing"]["stopped"] == "raced" else "complete"
    return result.attrs["phase_seconds"], outcome, result


def run_benchmark(
    task,
    trials: int,
    timing: TimingSettings,
    prune: PruneSettings | None = None,
    progress=print,
    kinds: dict[str, QuantConfig] | None = None,
) -> dict:
    """Median seconds per phase and per trial for each kind, qsearch and naive."""
    kinds = kinds or KINDS
    quiet_libraries()
    work = Path(tempfile.mkdtemp(prefix="qsearch-cost-"))
    evaluator = Evaluator(task, timing, workdir=work / "eval", prune=prune)
    evaluator.calibration = CalibrationCache(task, directory=work / "calibration")
    evaluator.fp32_outputs  # noqa: B018 - once per run in a search too, not a trial's cost
    # Ranges are computed once per method and kept on disk across runs (a search pays them
    # once, not per trial): computed here up front and reported apart.
    t = time.perf_counter()
    for config in kinds.values():
        with contextlib.suppress(Exception):  # a config that cannot be calibrated fails later
            evaluator.calibration.ranges(config)
    one_off = time.perf_counter() - t
    samples: dict[tuple[str, str], list[dict]] = {}
    outcomes: dict[str, list[str]] = {k: [] for k in kinds}
    frontier: list[tuple[float, float]] = []
    graphs: dict[str, int] = {}
    try:
        for r in range(trials):
            for kind, config in kinds.items():
                # Repeats of a config would be copies: each repeat is measured as if new,
                # except the same-graph kind, which meets the dynamic trial's graph.
                known = graphs if kind == "same-graph" else {}
                context = TrialContext(known_graphs=dict(known), frontier=tuple(frontier))
                t = time.perf_counter()
                phases, outcome, result = qsearch_trial(evaluator, config, context)
                phases = {**phases, "trial": time.perf_counter() - t}
                samples.setdefault((kind, "qsearch"), []).append(phases)
                outcomes[kind].append(outcome)
                if result is not None:
                    frontier.append((result.accuracy, result.attrs["speedup_low"]))
                    graphs.setdefault(result.attrs["graph_key"], len(graphs))
                if kind != "same-graph":
                    t = time.perf_counter()
                    naive = naive_trial(task, config, timing, work)
                    naive["trial"] = time.perf_counter() - t
                    samples.setdefault((kind, "naive"), []).append(naive)
                progress(f"repeat {r + 1}/{trials} {kind}: {outcome} in {phases['trial']:.1f} s")
    finally:
        evaluator.close()
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    for (kind, pipeline), runs in samples.items():
        row = {"kind": kind, "pipeline": pipeline, "trials": len(runs)}
        for phase in (*PHASES, "trial"):
            row[phase] = round(statistics.median(p.get(phase, 0.0) for p in runs), 3)
        if pipeline == "qsearch":
            row["outcomes"] = outcomes[kind]
        rows.append(row)
    return {"rows": rows, "ratios": ratios(samples), "one_off_calibration_s": round(one_off, 3)}


def outcome_of(trial) -> str | None:
    """What a finished trial of a search was, for the cost table (None: not a trial of a
    config at all, e.g. an invalid combination refused before anything ran)."""
    kind = trial_kind(trial)
    if kind == TrialKind.SAME_GRAPH:
        return "same graph"
    if is_reference(trial) or kind not in EVALUATIONS:
        return None
    if kind != TrialKind.MEASURED:
        return kind.value  # "pruned" or "failed"
    raced = trial.user_attrs.get("timing", {}).get("stopped") == "raced"
    return "raced" if raced else "complete"


def search_mix(
    task_dir: Path | None, trials: int, timing: TimingSettings, naive_sample: int, progress=print
) -> dict:
    """The main job's own trials: `qsearch run --beam 4` on the default space (no presets,
    no confirmation: those are once per search), into a scratch study; then the naive
    pipeline on `naive_sample` of the same configs. The median trial of a real search, not
    of a chosen mix of kinds."""
    from search.pipeline import Search
    from search.settings import RunSettings

    work = Path(tempfile.mkdtemp(prefix="qsearch-mix-"))
    try:
        settings = RunSettings(
            beam=4,
            trials=trials,
            study="trial-cost-mix",
            storage=f"sqlite:///{work / 'mix.db'}",
            timing_seconds=timing.seconds,
            timing_target=timing.target,
            presets=False,
            confirm=False,
            report=False,
            isolate=False,
            task_dir=task_dir,
        )
        search = Search.prepare(settings)
        search.run(on_trial=lambda study, _: progress(f"search: {search.evaluated()}/{trials}"))
        rows = []
        for trial in search.study.get_trials(deepcopy=False):
            outcome = outcome_of(trial)
            if outcome is not None and "wall_seconds" in trial.user_attrs:
                rows.append((outcome, trial.user_attrs["wall_seconds"], trial.user_attrs))
        measured = [attrs for outcome, _, attrs in rows if outcome in ("complete", "raced")]
        step = max(1, len(measured) // max(1, naive_sample))
        naive = []
        for attrs in measured[::step][:naive_sample]:
            config = QuantConfig.from_dict(attrs["config"])
            t = time.perf_counter()
            naive_trial(search.task, config, timing, work)
            naive.append(time.perf_counter() - t)
            progress(f"naive {len(naive)}/{naive_sample}: {naive[-1]:.1f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    seconds = [w for _, w, _ in rows]
    by: dict[str, list[float]] = {}
    for outcome, wall, _ in rows:
        by.setdefault(outcome, []).append(wall)
    naive_median = statistics.median(naive)
    return {
        "trials": len(rows),
        "by_outcome": {
            k: {"trials": len(v), "median_s": round(statistics.median(v), 2)} for k, v in by.items()
        },
        "median_trial_s": round(statistics.median(seconds), 2),
        "total_s": round(sum(seconds), 1),
        "naive_median_trial_s": round(naive_median, 2),
        "naive_sampled": len(naive),
        "median_over_naive": round(statistics.median(seconds) / naive_median, 3),
        "total_over_naive": round(sum(seconds) / (naive_median * len(rows)), 3),
    }


def ratios(samples: dict[tuple[str, str], list[dict]]) -> dict:
    """Median qsearch trial / median naive trial (all kinds pooled, and per kind), and a
    collapsed trial / a full dynamic trial (both qsearch)."""

    def median(kind: str | None, pipeline: str) -> float:
        runs = [
            p["trial"]
            for (k, pipe), rs in samples.items()
            for p in rs
            if pipe == pipeline and (kind is None or k == kind)
        ]
        return statistics.median(runs)

    out = {"median_trial_over_naive": round(median(None, "qsearch") / median(None, "naive"), 3)}
    for kind in ("dynamic", "static", "collapsed"):
        out[f"{kind}_over_naive"] = round(median(kind, "qsearch") / median(kind, "naive"), 3)
    out["collapsed_over_full"] = round(
        median("collapsed", "qsearch") / median("dynamic", "qsearch"), 3
    )
    return out


def warmup_profile(task, repeats: int = 3, runs: int = 6) -> dict[str, list[float]]:
    """Time of each of the first `runs` runs of fresh sessions on one timing batch, as a
    ratio to the median of the later half: how many warm-up runs timing needs. (One batch
    throughout: the timing batches differ in length by up to 15%, which would read as
    warm-up.)"""
    quiet_libraries()
    work = Path(tempfile.mkdtemp(prefix="qsearch-warmup-"))
    try:
        path = quantize(KINDS["dynamic"], task.model_path, work / "q")
        options = make_session_options(threads=1)
        profile: dict[str, list[list[float]]] = {"fp32": [], "int8": [], "int8 after slice": []}
        for _ in range(repeats):
            sessions = {
                "fp32": make_session(task.model_path, options),
                "int8": make_session(path, options),
            }
            after = make_session(path, options)
            task.outputs(after, task.eval_slices[0])  # a trial times after its accuracy
            sessions["int8 after slice"] = after
            times: dict[str, list[float]] = {name: [] for name in sessions}
            batch = task.timing_batches[0]
            for _ in range(runs):
                for name, session in sessions.items():
                    t = time.perf_counter()
                    session.run(None, batch.inputs)
                    times[name].append(time.perf_counter() - t)
            for name, values in times.items():
                steady = statistics.median(values[runs // 2 :])
                profile[name].append([v / steady for v in values])
        return {
            name: [round(statistics.median(col), 3) for col in zip(*rows, strict=True)]
            for name, rows in profile.items()
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=3, help="trials of each kind")
    parser.add_argument("--seconds", type=float, default=12.0, help="timing budget")
    parser.add_argument(
        "--target", type=float, default=None, help="timing target (default: qsearch's)"
    )
    parser.add_argument("--warmup", action="store_true", help="also profile warm-up runs")
    parser.add_argument(
        "--search",
        type=int,
        default=0,
        metavar="N",
        help="also run the main job (beam 4, default space) for N trials and report its trials",
    )
    parser.add_argument("--naive-sample", type=int, default=4, help="naive trials (--search)")
    parser.add_argument("--task-dir", type=Path, help="a prepared task (default: the default)")
    parser.add_argument("--skip-kinds", action="store_true", help="only the --search part")
    args = parser.parse_args(argv)

    from search.tasks.default import default_task, load_task_dir

    task = load_task_dir(args.task_dir) if args.task_dir else default_task()
    timing = TimingSettings(seconds=args.seconds)
    if args.target is not None:
        timing = TimingSettings(seconds=args.seconds, target=args.target)
    if args.warmup:
        print("warm-up (run time / steady median, runs 1..):", warmup_profile(task))
    worker = worker_info(timing.threads)
    result: dict = {}
    if not args.skip_kinds:
        result = run_benchmark(task, args.trials, timing)
        print_kinds(result, task, worker)
    if args.search:
        mix = search_mix(args.task_dir, args.search, timing, args.naive_sample)
        print_mix(mix)
        result["search"] = mix
    print(
        json.dumps(
            {"benchmark": "trial_cost", "worker": worker, "timing": timing.to_dict(), **result}
        )
    )
    return 0


def print_kinds(result: dict, task, worker: dict) -> None:
    print(f"\nTrial cost on {describe_worker(worker)}, {task.name}, median seconds per trial")
    header = f"{'kind':<11} {'pipeline':<8} " + " ".join(f"{p:>9}" for p in (*PHASES, "trial"))
    print(header)
    print("-" * len(header))
    for row in result["rows"]:
        cells = " ".join(f"{row[p]:>9.2f}" for p in (*PHASES, "trial"))
        extra = f"  {','.join(row['outcomes'])}" if "outcomes" in row else ""
        print(f"{row['kind']:<11} {row['pipeline']:<8} {cells}{extra}")
    print(
        f"one-off calibration (once per method, kept on disk): {result['one_off_calibration_s']} s"
    )
    print("ratios: " + ", ".join(f"{k} {v:.3f}" for k, v in result["ratios"].items()))


def print_mix(mix: dict) -> None:
    print(f"\nThe main job's trials (qsearch run --beam 4, default space, {mix['trials']} trials)")
    print(f"{'outcome':<11} {'trials':>6} {'median s':>9}")
    for outcome, row in mix["by_outcome"].items():
        print(f"{outcome:<11} {row['trials']:>6} {row['median_s']:>9.2f}")
    print(
        f"median trial {mix['median_trial_s']} s vs naive {mix['naive_median_trial_s']} s "
        f"({mix['naive_sampled']} of its configs): {mix['median_over_naive']:.3f}; whole "
        f"search {mix['total_s']} s vs naive {mix['total_over_naive']:.3f}"
    )


if __name__ == "__main__":
    sys.exit(main())
