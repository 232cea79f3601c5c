"""How soon does a search hold a good answer? The frontier's hypervolume against wall time.

For each study (one `qsearch run` each, run by this script or named with `--study`), read
back from the study alone: the frontier's hypervolume after every trial, against the wall
time since the search's first trial started (each trial's own speedup: what the search knew
then); the time and trial at which the search first held its final best config *within its
interval* (a trial within --max-drop whose own speedup reaches the final best's pooled
lower bound); and convergence: the trial and time after which the hypervolume never grew by
more than 0.5% again, against the whole run's trials and time; and when it first held every
config of its final frontier within its interval (a trial at no lower accuracy reading at
least the config's pooled lower bound): a late trial that reads a few percent
higher by chance grows the hypervolume, but holds nothing new. Beside a `beam-before` run
of the same task, each run's trials until it first held *that* run's final frontier: the
answer the search gave before, against the trials the beam before needed to stop.

Runs (`--runs`): `beam-before` (the beam as it was before issue 15: no seed recipes, no move
deferral, no stop on ties: `--no-seeds --no-defer-moves --no-settle-ties`, on the
per-operator-type space), `beam-per-type` (the beam as shipped on that same space: the
comparison of trials to convergence), `beam`
(`--beam 4` as shipped: seeds, the default space) and `tpe` (`--sampler tpe`), on the
default task; `--bert-base` adds the same runs on the BERT-base-size classifier of
benchmarks/model_size.py (random weights, the `agreement` metric). Each run is an ordinary
study in `--storage-dir`, so re-running the script resumes them and the report and dashboard
open them. Prints a table and one JSON line.

    .venv/bin/python benchmarks/time_to_frontier.py --runs beam-before,beam,tpe   # ~45 min
    .venv/bin/python benchmarks/time_to_frontier.py --study zen5-beam4 --storage sqlite:///studies/zen5-beam4.db
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.search_efficiency import hypervolume  # noqa: E402
from search.ranking import within_drop  # noqa: E402
from search.results import best_row, pareto_rows  # noqa: E402
from search.trial_kind import is_measured  # noqa: E402
from search.worker import describe_worker, worker_info  # noqa: E402

RUNS = {
    "beam-before": [
        *("--beam", "4", "--no-seeds", "--no-defer-moves", "--no-settle-ties"),
        *("--space", "per-type"),
    ],
    "beam-per-type": ["--beam", "4", "--space", "per-type"],  # after, on the space of before
    "beam": ["--beam", "4"],
    "tpe": ["--sampler", "tpe", "--trials", "60"],
}
GROWTH = 0.005  # a hypervolume step smaller than this share is not progress


def timeline(
    study: optuna.Study,
    max_drop: float,
    ref_drop: float = 0.05,
    before: optuna.Study | None = None,
) -> dict:
    """The study's progress as the search saw it, and when it first held its final best;
    with `before` (the `beam-before` run of the same task), when it first held that run's
    final frontier: the same answer the search gave before, in how many trials."""
    fp32 = study.user_attrs["fp32_accuracy"]
    trials = study.get_trials(deepcopy=False)
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    if not starts:
        return {"study": study.study_name, "trials": 0}
    t0 = min(starts)
    done = sorted(
        (t for t in trials if is_measured(t) and t.datetime_complete is not None),
        key=lambda t: t.datetime_complete,
    )
    reference = (fp32 - ref_drop, 1.0)
    points: list[tuple[float, float]] = []
    curve = []
    for t in done:
        points.append((t.values[0], t.values[1]))
        seconds = (t.datetime_complete - t0).total_seconds()
        curve.append(
            {
                "trial": t.number,
                "seconds": round(seconds, 1),
                "hypervolume": round(hypervolume(points, reference), 5),
            }
        )
    best = best_row(study, max_drop)
    held = None
    if best is not None:
        low = best["speedup_low"]
        held = first_holding(
            done, t0, [lambda t: within_drop(t.values[0], fp32, max_drop) and t.values[1] >= low]
        )
    final = curve[-1]["hypervolume"] if curve else 0.0
    converged = None
    for i, point in enumerate(curve):
        if all(later["hypervolume"] <= point["hypervolume"] * (1 + GROWTH) for later in curve[i:]):
            converged = {
                "trial": point["trial"],
                "seconds": point["seconds"],
                "measured_trials": i + 1,
            }
            break
    ends = [t.datetime_complete for t in trials if t.datetime_complete is not None]
    frontier = held_frontier(study, done, t0, fp32 - ref_drop)
    held_before = None
    if before is not None and before.user_attrs.get("fp32_accuracy") == fp32:
        held_before = held_frontier(before, done, t0, fp32 - ref_drop)
    return {
        "study": study.study_name,
        "measured_trials": len(done),
        "trials": len(trials),
        "wall_seconds": round((max(ends) - t0).total_seconds(), 1) if ends else 0.0,
        "final_best": None
        if best is None
        else {
            "trial": int(best["trial"]),
            "speedup": round(float(best["speedup"]), 3),
            "low": round(float(best["speedup_low"]), 3),
            "high": round(float(best["speedup_high"]), 3),
            "points": round(100 * (float(best["accuracy"]) - fp32), 2),
            "config": best["config"],
        },
        "held_final_best": held,
        "converged": converged,
        "held_frontier": frontier,
        "held_before_frontier": held_before,
        "final_hypervolume": final,
        "curve": curve,
    }


def held_frontier(front_of: optuna.Study, done: list, t0, floor: float) -> dict | None:
    """When the search (its measured trials `done`) first held every config of the final
    frontier of `front_of` (its own study, or another run's on the same task; pooled
    speedups, `search.results.pareto_rows`, accuracy at least `floor`: the hypervolume's
    region) within its interval, as `held_final_best` for the best alone: for each, a trial
    so far at no lower accuracy whose own speedup reaches the config's pooled lower bound.
    Unlike hypervolume growth, a late trial that only reads a few percent higher by chance
    does not move it."""
    front = pareto_rows(front_of)
    front = front[front["accuracy"] >= floor]
    if front.empty:
        return None
    targets = [
        lambda t, accuracy=r.accuracy, low=r.speedup_low: (
            t.values[0] >= accuracy and t.values[1] >= low
        )
        for r in front.itertuples()
    ]
    held = first_holding(done, t0, targets)
    return None if held is None else {**held, "configs": len(targets)}


def first_holding(done: list, t0, targets: list[Callable]) -> dict | None:
    """The first of the measured trials `done` (in completion order) after which every
    target has been held by some trial so far (`target(trial)` true), with its time since
    `t0`; None if the search never held them all."""
    held: set[int] = set()
    for i, t in enumerate(done):
        held.update(j for j, target in enumerate(targets) if j not in held and target(t))
        if len(held) == len(targets):
            return {
                "trial": t.number,
                "seconds": round((t.datetime_complete - t0).total_seconds(), 1),
                "measured_trials": i + 1,
            }
    return None


def run_search(
    label: str, extra: list[str], storage_dir: Path, task_args: list[str], name: str
) -> optuna.Study:
    """`qsearch run` as a user runs it (a fresh process), into its own study; resumes."""
    study = f"ttf-{name}-{label}"
    storage = f"sqlite:///{storage_dir / study}.db"
    command = [
        sys.executable,
        "-m",
        "search.cli",
        "run",
        *task_args,
        *extra,
        "--study",
        study,
        "--storage",
        storage,
        "--no-report",
    ]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return optuna.load_study(study_name=study, storage=storage)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default=",".join(RUNS), help=f"of {', '.join(RUNS)}")
    parser.add_argument("--study", action="append", default=[], help="analyse this study")
    parser.add_argument("--storage", help="storage of --study")
    parser.add_argument("--storage-dir", type=Path, default=Path("benchmarks/tables"))
    parser.add_argument("--max-drop", type=float, default=0.01)
    parser.add_argument("--bert-base", action="store_true", help="also on BERT-base size")
    parser.add_argument("--task-args", default="", help="extra `qsearch run` arguments")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    studies: list[tuple[str, str, optuna.Study]] = []
    for name in args.study:
        studies.append(("given", name, optuna.load_study(study_name=name, storage=args.storage)))
    if not args.study:
        args.storage_dir.mkdir(parents=True, exist_ok=True)
        tasks = {"default": args.task_args.split()}
        if args.bert_base:
            tasks["bert-base"] = _bert_base_args(args.storage_dir) + args.task_args.split()
        for task_name, task_args in tasks.items():
            for label in [r for r in args.runs.split(",") if r]:
                if label not in RUNS:
                    parser.error(f"--runs must name runs of {', '.join(RUNS)}, not {label!r}")
                study = run_search(label, RUNS[label], args.storage_dir, task_args, task_name)
                studies.append((task_name, label, study))
    worker = worker_info(1)
    befores = {task: study for task, label, study in studies if label == "beam-before"}
    results = [
        {
            "task": task,
            "run": label,
            **timeline(study, args.max_drop, before=befores.get(task)),
        }
        for task, label, study in studies
    ]
    print_table(results, worker)
    print(
        json.dumps(
            {
                "benchmark": "time_to_frontier",
                "cpu": describe_worker(worker),
                "max_drop": args.max_drop,
                "runs": results,
            }
        )
    )
    return 0


def _bert_base_args(directory: Path) -> list[str]:
    """`qsearch run` arguments of the BERT-base-size task, built once into `directory`."""
    from benchmarks.model_size import build_bert_base, sentences_csv

    folder = directory / "bert-base"
    if not (folder / "config.json").exists():
        build_bert_base(folder, layers=12, hidden=768)
    csv = directory / "bert-base-sentences.csv"
    if not csv.exists():
        sentences_csv(csv)
    return ["--model", str(folder), "--data", str(csv), "--metric", "agreement"]


def _held(frontier: dict | None) -> str:
    if not frontier:
        return "-"
    return (
        f"{frontier['measured_trials']} trials, {frontier['seconds']} s "
        f"({frontier['configs']} configs)"
    )


def print_table(results: list[dict], worker: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Time to a good answer ({describe_worker(worker)})")
    for column in (
        "task",
        "run",
        "study",
        "measured",
        "wall s",
        "final best",
        "held it after",
        "converged after",
        "held its frontier after",
        "held beam-before's frontier after",
    ):
        table.add_column(column)
    for r in results:
        best, held, conv = r.get("final_best"), r.get("held_final_best"), r.get("converged")
        table.add_row(
            r["task"],
            r["run"],
            r["study"],
            str(r.get("measured_trials", 0)),
            str(r.get("wall_seconds", "-")),
            f"{best['speedup']:.3f}x [{best['low']:.3f}-{best['high']:.3f}] {best['points']:+.1f}"
            if best
            else "-",
            f"{held['seconds']} s (trial {held['trial']})" if held else "-",
            f"{conv['measured_trials']} trials, {conv['seconds']} s" if conv else "-",
            _held(r.get("held_frontier")),
            _held(r.get("held_before_frontier")),
        )
    Console(width=220).print(table)


if __name__ == "__main__":
    raise SystemExit(main())
