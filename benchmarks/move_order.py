"""Does a beam that tries first the moves that paid reach its frontier in fewer trials?

Replays a beam study (a real `qsearch run --beam K`: `make run`'s, or a `time_to_frontier.py`
run's) through the beam as shipped twice: a round's neighbours in walk order (the beam before)
and ordered by what their moves gained so far (`BeamSearch(order_moves=True)`). Every
evaluation is a look-up of the study's own measurement, so both replays see the same numbers
and run the same rounds (the order within a round changes nothing the beam decides): only
how soon the frontier is reached differs, which a side-by-side real run could not isolate
from the timing's noise (one trial reading a few percent high changes a beam's course). The
study's seed trials come first, as in the run.

For each replay it prints the measured trials, when the hypervolume converged (never grew by
0.5% again: `time_to_frontier.convergence`), when it held the study's final best and when it
held every config of the study's final frontier, each within its pooled interval; and one
JSON line.

    .venv/bin/python benchmarks/move_order.py --study minilm-sentiment-default-beam4 \\
        --storage sqlite:///studies/minilm-sentiment-default-beam4.db
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.efficiency_table import Entry, Table, TableEvaluator  # noqa: E402
from benchmarks.search_efficiency import hypervolume  # noqa: E402
from benchmarks.time_to_frontier import convergence, first_holding, held_frontier  # noqa: E402
from search.config import QuantConfig  # noqa: E402
from search.errors import QsearchError  # noqa: E402
from search.ranking import within_drop  # noqa: E402
from search.results import best_row  # noqa: E402
from search.runner import run_search  # noqa: E402
from search.space import SearchSpace  # noqa: E402
from search.strategies.base import records  # noqa: E402
from search.strategies.beam import BeamSearch  # noqa: E402
from search.strategies.seeded import SEED, SeedStrategy  # noqa: E402
from search.trial_kind import REFERENCE, is_measured  # noqa: E402

CARRIED = ("fp32_accuracy", "metric", "objective", "task", "space_name", "space_text")
ORDERS = {"walk order": False, "by gain": True}


def lookup(study: optuna.Study, space: SearchSpace) -> Table:
    """The study's answers by config key: what each config measured in the run."""
    entries: dict[str, Entry] = {}
    for r in records(study):
        if r.answers and not r.attrs.get(REFERENCE):
            entries.setdefault(r.key, Entry(r.values, r.attrs))
    return Table(entries, space, dict(study.user_attrs))


def replay(
    study: optuna.Study, space: SearchSpace, width: int, order_moves: bool, max_drop: float
) -> dict:
    """The beam run again over `study`'s measurements; its progress as `time_to_frontier`
    reads a run's, in measured trials."""
    table = lookup(study, space)
    again = optuna.create_study(
        storage=optuna.storages.InMemoryStorage(), directions=["maximize", "maximize"]
    )
    for key in CARRIED:
        if key in study.user_attrs:
            again.set_user_attr(key, study.user_attrs[key])
    evaluator = TableEvaluator(table)
    seeds = {
        r.attrs[SEED]: QuantConfig.from_dict(r.attrs["config"])
        for r in records(study)
        if r.attrs.get(SEED) and "config" in r.attrs
    }
    if seeds:
        run_search(again, space, SeedStrategy(seeds), evaluator, trials=len(seeds))
    beam = BeamSearch(width, max_drop, order_moves=order_moves)
    run_search(again, space, beam, evaluator, trials=10**6)
    if evaluator.missing:
        raise QsearchError(
            f"the beam asked for configs study {study.study_name!r} never measured "
            f"({evaluator.missing[:3]}): replay a study whose beam ran to its end, with the "
            f"beam width it ran with (--width)"
        )
    fp32 = float(study.user_attrs["fp32_accuracy"])
    done = sorted((t for t in again.get_trials(deepcopy=False) if is_measured(t)), key=_number)
    t0 = done[0].datetime_start if done else None
    reference = (fp32 - 0.05, 1.0)
    curve = []
    for i, t in enumerate(done):
        points = [d.values for d in done[: i + 1]]
        curve.append(
            {"trial": t.number, "seconds": 0.0, "hypervolume": hypervolume(points, reference)}
        )
    best = best_row(study, max_drop)
    held_best = None
    if best is not None:
        low = float(best["speedup_low"])
        held_best = first_holding(
            done, t0, [lambda t: within_drop(t.values[0], fp32, max_drop) and t.values[1] >= low]
        )
    return {
        "measured_trials": len(done),
        "converged": _count(convergence(curve)),
        "held_final_best": _count(held_best),
        "held_frontier": _count(held_frontier(study, done, t0, fp32 - 0.05)),
        "order": [t.user_attrs.get("config_key") for t in done],
    }


def _number(trial) -> int:
    return trial.number


def _count(event: dict | None) -> int | None:
    return None if event is None else event["measured_trials"]


def study_space(study: optuna.Study, operators: list[str]) -> SearchSpace:
    text = study.user_attrs.get("space_text")
    if text is None:
        raise QsearchError(f"study {study.study_name!r} must record its space (space_text)")
    return SearchSpace.from_text(text, study.user_attrs.get("space_source", "<study>")).resolve(
        operators
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--study", required=True)
    parser.add_argument("--storage", required=True)
    parser.add_argument("--width", type=int, default=4, help="the beam width the study ran")
    parser.add_argument("--max-drop", type=float, default=0.01)
    parser.add_argument(
        "--operators",
        help="the model's operator types, comma-separated (default: the default task's)",
    )
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=args.study, storage=args.storage)
        if args.operators:
            operators = args.operators.split(",")
        else:
            from search.tasks.default import default_task_dir, load_task_dir

            operators = load_task_dir(default_task_dir()).operators
        space = study_space(study, operators)
        results = {
            label: replay(study, space, args.width, order, args.max_drop)
            for label, order in ORDERS.items()
        }
    except (QsearchError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"Replays of {args.study} (beam {args.width}), in measured trials")
    print(f"{'order':<12} {'trials':>7} {'converged':>10} {'final best':>11} {'frontier':>9}")
    for label, r in results.items():
        print(
            f"{label:<12} {r['measured_trials']:>7} {str(r['converged']):>10} "
            f"{str(r['held_final_best']):>11} {str(r['held_frontier']):>9}"
        )
    summary = {k: {f: v for f, v in r.items() if f != "order"} for k, r in results.items()}
    print(json.dumps({"benchmark": "move_order", "study": args.study, "replays": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
