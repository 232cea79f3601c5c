"""How much of the accuracy/speed frontier does each strategy find within a small budget?

A tabular benchmark. Measuring a config takes ~25 s, so comparing strategies over several
seeds by running them for real would take days and mix the strategies' merits with the
machine's drift. Instead every distinct config of a space small enough to enumerate is
evaluated once (`--build`) into an ordinary Optuna study, the *table*; each strategy is
then replayed against the table, where an evaluation is a look-up, so a search takes
milliseconds and every strategy sees the same numbers.

- `--build`: the grid over the space with the real `Evaluator` on the default task, stored
  in `benchmarks/tables/<task>-<space>.db` as study `table-<task>-<space>` (`qsearch show`,
  `qsearch report` and optuna-dashboard open it like any study). Re-running continues it.
  Then the table's frontier, and every config within its intervals, is re-timed
  round-robin (`--confirm` configs a pass at most, `--confirm-seconds` each over a pass) as
  a search confirms its own: the best of 96 noisy measurements is biased upward (on this
  machine a 12 s trial's speedup spreads with a CV of ~2.5%), and a frontier made of lucky
  draws would score every strategy against numbers no search could reproduce.
- replay (the default): for each strategy (beam K=2,4,8; tpe, random, nsga2), each budget
  (10%, 20%, 40% of the table's size, at least one trial) and each seed, `run_search` into a
  fresh in-memory study with `TableEvaluator`, then the hypervolume of the (accuracy,
  speedup) points it found as a share of the whole table's. Strategies choose from the
  trials' own numbers (what a search sees); the points are scored with the pooled speedup
  (trial and confirmation, weighted by timed pairs) where the table has a confirmation.
  The beam is deterministic, so it runs with one seed. The reference point is (fp32
  accuracy - 5 points, speedup 1.0): a config must be faster than fp32 and lose less than 5
  points to count at all.

The table itself (building, reading back, answering evaluations) is in `efficiency_table.py`.

    .venv/bin/python benchmarks/search_efficiency.py --build      # ~40 min, quiet machine
    .venv/bin/python benchmarks/search_efficiency.py --seeds 5    # seconds
    .venv/bin/python benchmarks/search_efficiency.py --strategies beam4,beam4-unsettled --budgets 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.efficiency_table import (  # noqa: E402
    TABLES_DIR,
    Table,
    TableEvaluator,
    default_table_storage,
    fill_table,
    open_table,
    table_name,
    table_size,
)
from search.errors import QsearchError  # noqa: E402
from search.ranking import non_dominated  # noqa: E402
from search.runner import evaluated_count, run_search  # noqa: E402
from search.strategies import make_strategy  # noqa: E402
from search.strategies.base import records  # noqa: E402

STRATEGIES = ("beam2", "beam4", "beam8", "tpe", "random", "nsga2")
FRACTIONS = (0.1, 0.2, 0.4)
TARGET_SHARE = 0.98


# --- hypervolume --------------------------------------------------------------------------


def _sweep_hypervolume(points: np.ndarray, reference: np.ndarray) -> float:
    """2-D hypervolume of maximized points above `reference`: sweep by descending x."""
    area, best_y = 0.0, reference[1]
    for x, y in sorted(map(tuple, points), reverse=True):
        if y > best_y:
            area += (x - reference[0]) * (y - best_y)
            best_y = y
    return float(area)


def hypervolume(points: Iterable[Sequence[float]], reference: Sequence[float]) -> float:
    """Area dominated by (accuracy, speedup) points, both maximized, and bounded below by
    `reference`; a point not above the reference in both contributes nothing. Optuna's exact
    code does the work when importable (a private module), else a 2-D sweep."""
    ref = np.asarray(reference, dtype=float)
    pts = np.asarray(list(points), dtype=float).reshape(-1, 2)
    pts = pts[np.all(pts > ref, axis=1)]
    if len(pts) == 0:
        return 0.0
    try:
        from optuna._hypervolume import compute_hypervolume
    except ImportError:  # pragma: no cover - depends on Optuna's internals
        return _sweep_hypervolume(pts, ref)
    return float(compute_hypervolume(-pts, -ref))


# --- replay -------------------------------------------------------------------------------


UNSETTLED = "-unsettled"  # beamK-unsettled: the beam without its stop on ties (--no-settle-ties)


def strategy_for(name: str, seed: int, max_drop: float):
    """`beamK`, `beamK-unsettled` or a sampler name (tpe, random, nsga2, grid) -> a strategy."""
    if name.startswith("beam"):
        width = name[4:].removesuffix(UNSETTLED)
        if not width.isdigit():
            raise QsearchError(
                f"--strategies must name beam widths as beamK or beamK{UNSETTLED}, but got {name!r}"
            )
        settle = not name.endswith(UNSETTLED)
        return make_strategy(int(width), None, seed=seed, max_drop=max_drop, settle_ties=settle)
    return make_strategy(None, name, seed=seed, max_drop=max_drop)


def budget_for(fraction: float, size: int) -> int:
    return max(1, round(fraction * size))


@dataclass(frozen=True)
class Replay:
    strategy: str
    fraction: float
    budget: int
    seed: int
    evaluated: int
    share: float
    found: dict[str, tuple[float, float]]


def replay(
    table: Table,
    strategy: str,
    budget: int,
    seed: int,
    reference: tuple[float, float],
    max_drop: float = 0.01,
    fraction: float | None = None,
) -> Replay:
    """One search against the table in a fresh in-memory study carrying the table's
    attributes (fp32 accuracy, space, task), as a real run's study would."""
    chosen = strategy_for(strategy, seed, max_drop)
    study = optuna.create_study(
        storage=optuna.storages.InMemoryStorage(),
        directions=["maximize", "maximize"],
        sampler=chosen.sampler(),
    )
    for key, value in table.attrs.items():
        study.set_user_attr(key, value)
    study.set_user_attr("strategy", chosen.name)
    evaluator = TableEvaluator(table)
    run_search(study, table.space, chosen, evaluator, budget)
    if evaluator.missing:
        raise QsearchError(
            f"{strategy} proposed configs the table lacks ({evaluator.missing[:3]}): the "
            f"table must be built from the same space"
        )
    complete = records(study, states=(optuna.trial.TrialState.COMPLETE,))
    found = table.points(r.key for r in complete if r.values is not None)
    total = hypervolume(table.points().values(), reference)
    if total <= 0:
        raise QsearchError(
            f"the reference point {reference} must be below some config of the table, but no "
            f"config beats it: lower --ref-speedup or raise --ref-drop"
        )
    share = hypervolume(found.values(), reference) / total
    frac = budget / len(table.entries) if fraction is None else fraction
    return Replay(strategy, frac, budget, seed, evaluated_count(study), share, found)


def frontier(points: dict[str, tuple[float, float]]) -> set[str]:
    keys = list(points)
    return {keys[i] for i in non_dominated([points[k] for k in keys])}


def run_all(
    table: Table,
    strategies: Sequence[str] = STRATEGIES,
    fractions: Sequence[float] = FRACTIONS,
    seeds: int = 5,
    reference: tuple[float, float] | None = None,
    max_drop: float = 0.01,
) -> list[Replay]:
    reference = reference or (table.fp32_accuracy - 0.05, 1.0)
    out = []
    for name in strategies:
        # beam is deterministic (no sampler, no random tie-breaks): one seed says it all
        for seed in range(1 if name.startswith("beam") or name == "grid" else seeds):
            for fraction in fractions:
                budget = budget_for(fraction, len(table.entries))
                out.append(replay(table, name, budget, seed, reference, max_drop, fraction))
    return out


def summarize(runs: Sequence[Replay]) -> list[dict]:
    """Per strategy and budget: median and min share across seeds, mean evaluated trials."""
    groups: dict[tuple[str, float], list[Replay]] = {}
    for run in runs:
        groups.setdefault((run.strategy, run.fraction), []).append(run)
    return [
        {
            "strategy": name,
            "fraction": fraction,
            "budget": group[0].budget,
            "seeds": len(group),
            "median_share": round(statistics.median(r.share for r in group), 4),
            "min_share": round(min(r.share for r in group), 4),
            "mean_evaluated": round(statistics.mean(r.evaluated for r in group), 2),
        }
        for (name, fraction), group in groups.items()
    ]


def best_within(rows: Sequence[dict], fraction: float = 0.2) -> dict | None:
    """The best strategy at budgets up to `fraction`: highest median share, then min share,
    then fewer trials."""
    eligible = [r for r in rows if r["fraction"] <= fraction + 1e-9]
    if not eligible:
        return None
    return max(eligible, key=lambda r: (r["median_share"], r["min_share"], -r["mean_evaluated"]))


# --- command line -------------------------------------------------------------------------


def build(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from search.confirm import confirm_frontier
    from search.measure import TimingSettings
    from search.objective import Evaluator
    from search.quantize import quiet_libraries
    from search.results import confirmations
    from search.settings import RunSettings
    from search.space import load_space
    from search.tasks.default import default_task

    quiet_libraries()
    task = default_task()
    space = load_space(args.space).resolve(task.operators)
    name = args.study or table_name(task.name, space.name)
    if args.storage is None:
        TABLES_DIR.mkdir(parents=True, exist_ok=True)
    storage = args.storage or default_table_storage(task.name, space.name)
    settings = RunSettings(space=args.space, sampler="grid", timing_seconds=args.timing_seconds)
    study = open_table(name, storage, space, task, {**settings.to_dict(), "study": name})
    evaluator = Evaluator(task, TimingSettings(seconds=args.timing_seconds))
    size = table_size(space)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    try:
        with Progress(*columns) as progress:
            bar = progress.add_task("table", total=size, completed=evaluated_count(study))
            fill_table(
                study,
                space,
                evaluator,
                lambda s, _: progress.update(bar, completed=evaluated_count(s)),
            )
            # The table's frontier is the max of noisy measurements, biased upward: re-time it
            # (and every config within its intervals) as a search confirms its own.
            confirm = progress.add_task("confirm", total=None)  # rounds: passes x 6
            confirm_frontier(
                study,
                evaluator,
                lambda _: progress.advance(confirm),
                limit=args.confirm,
                seconds=args.confirm_seconds,
            )
    except KeyboardInterrupt:
        print(f"Interrupted: run the same command again to continue {name} in {storage}.")
        return 130
    finally:
        evaluator.close()
    print(
        f"Table {name} in {storage}: {size} configs, {evaluated_count(study)} measured (the "
        f"others quantize to a graph measured before), "
        f"{len(confirmations(study))} re-timed"
    )
    return 0


def parse_fractions(text: str) -> list[float]:
    try:
        fractions = [float(f) for f in text.split(",")]
    except ValueError:
        fractions = []
    if not fractions or not all(0 < f <= 1 for f in fractions):
        raise QsearchError(f"--budgets must be fractions in (0, 1] like 0.1,0.2, but got {text!r}")
    return fractions


def print_results(table: Table, rows: list[dict], reference: tuple[float, float]) -> None:
    fractions = sorted({r["fraction"] for r in rows})
    cells = {(r["strategy"], r["fraction"]): r for r in rows}
    print(
        f"\nSearch efficiency on space {table.space.name} of task "
        f"{table.attrs.get('task', {}).get('name', '-')}: {len(table.entries)} configs, "
        f"fp32 accuracy {table.fp32_accuracy:.4f}, reference (accuracy {reference[0]:.4f}, "
        f"speedup {reference[1]:g}); share of the table's hypervolume, median / min over "
        f"seeds (mean evaluated trials). Beam is deterministic: one seed."
    )
    budgets = {f: next(r["budget"] for r in rows if r["fraction"] == f) for f in fractions}
    wide = max(9, *(len(r["strategy"]) for r in rows))
    header = f"{'strategy':<{wide}} {'seeds':>5}" + "".join(
        f" {f'{100 * f:g}% ({budgets[f]})':>22}" for f in fractions
    )
    print(header)
    print("-" * len(header))
    for name in dict.fromkeys(r["strategy"] for r in rows):
        seeds = next(r["seeds"] for r in rows if r["strategy"] == name)
        line = f"{name:<{wide}} {seeds:>5}"
        for f in fractions:
            c = cells.get((name, f))
            text = (
                f"{c['median_share']:.3f} / {c['min_share']:.3f} ({c['mean_evaluated']:g})"
                if c
                else "-"
            )
            line += f" {text:>22}"
        print(line)
    best = best_within(rows)
    if best:
        reaches = "reaches" if best["median_share"] >= TARGET_SHARE else "does not reach"
        print(
            f"Best at <= 20% budget: {best['strategy']} at {100 * best['fraction']:g}% "
            f"(median share {best['median_share']:.3f}, min {best['min_share']:.3f}); it "
            f"{reaches} {100 * TARGET_SHARE:g}% of the table's hypervolume."
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", action="store_true", help="build (or continue) the table")
    parser.add_argument("--space", default="dynamic", help="space name or TOML file")
    parser.add_argument("--timing-seconds", type=float, default=12.0, help="per trial (build)")
    parser.add_argument(
        "--confirm",
        type=int,
        default=24,
        help="most configs of a round-robin confirmation pass (build)",
    )
    parser.add_argument(
        "--confirm-seconds",
        type=float,
        default=36.0,
        help="timing of each config over a pass (build)",
    )
    parser.add_argument("--study", help="table study name (default table-<task>-<space>)")
    parser.add_argument("--storage", help="table storage URL (default benchmarks/tables/)")
    parser.add_argument("--task-name", default="minilm-sentiment", help="task (replay)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per sampler")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--budgets", default=",".join(map(str, FRACTIONS)), help="fractions")
    parser.add_argument("--ref-drop", type=float, default=0.05, help="reference accuracy drop")
    parser.add_argument("--ref-speedup", type=float, default=1.0, help="reference speedup")
    parser.add_argument("--max-drop", type=float, default=0.01, help="the beam's tolerance")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        if args.build:
            return build(args)
        from search.study import load_study

        space_name = Path(args.space).stem
        name = args.study or table_name(args.task_name, space_name)
        storage = args.storage or default_table_storage(args.task_name, space_name)
        if args.storage is None and not Path(storage[len("sqlite:///") :]).exists():
            raise QsearchError(
                f"the table {storage} must exist: build it first with --build --space "
                f"{args.space} (make bench-table)"
            )
        table = Table.from_study(load_study(name, storage))
        reference = (table.fp32_accuracy - args.ref_drop, args.ref_speedup)
        fractions = parse_fractions(args.budgets)
        if args.seeds < 1:
            raise QsearchError(f"--seeds must be at least 1, but got {args.seeds}")
        strategies = args.strategies.split(",")
        runs = run_all(table, strategies, fractions, args.seeds, reference, args.max_drop)
    except QsearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = summarize(runs)
    print_results(table, rows, reference)
    best = best_within(rows)
    print(
        json.dumps(
            {
                "benchmark": "search_efficiency",
                "table": {"study": name, "storage": storage, "configs": len(table.entries)},
                "task": table.attrs.get("task", {}).get("name"),
                "fp32_accuracy": table.fp32_accuracy,
                "reference": {"accuracy": reference[0], "speedup": reference[1]},
                "table_hypervolume": hypervolume(table.points().values(), reference),
                "results": rows,
                "best_within_20": best,
                "reaches_98": bool(best and best["median_share"] >= TARGET_SHARE),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
