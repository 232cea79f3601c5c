"""The table of the search-efficiency benchmark: every config of a space measured once.

The table is an ordinary Optuna study filled by the grid strategy through `run_search`, so
it resumes like any search and `qsearch show`/`report` and optuna-dashboard open it; replay
reads it back into `Table` and answers evaluations from it with `TableEvaluator`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from search.errors import QsearchError, TrialError, TrialPruned
from search.objective import TrialResult
from search.results import confirmations
from search.runner import RunSummary, run_search
from search.space import SearchSpace
from search.space_walk import all_configs
from search.strategies import GridStrategy
from search.strategies.base import records
from search.study import open_study
from search.trial_kind import PRUNE_EVIDENCE, REFERENCE

TABLES_DIR = Path(__file__).resolve().parent / "tables"


def table_size(space: SearchSpace) -> int:
    return sum(1 for _ in all_configs(space))


def table_name(task_name: str, space_name: str) -> str:
    return f"table-{task_name}-{space_name}"


def default_table_storage(task_name: str, space_name: str) -> str:
    return f"sqlite:///{TABLES_DIR / f'{task_name}-{space_name}.db'}"


def open_table(
    name: str, storage: str, space: SearchSpace, task: Any, settings: dict | None = None
) -> optuna.Study:
    """The table's study, opened like a real run's (`open_study` refuses a changed space or
    model), plus what replay needs to rebuild the space without loading the task."""
    study = open_study(name, storage, space, task.describe(), None, GridStrategy.name)
    study.set_user_attr("metric", task.metric)
    study.set_user_attr("space_operators", list(space.operators or ()))
    if settings is not None:
        study.set_user_attr("settings", settings)
    return study


def fill_table(
    study: optuna.Study,
    space: SearchSpace,
    evaluator: Any,
    on_trial: Callable[[optuna.Study, str], None] | None = None,
) -> RunSummary:
    """Evaluate every config of `space` not yet in the study: the grid through `run_search`,
    so a killed build resumes and the trials look like any search's."""
    if "fp32_accuracy" not in study.user_attrs:
        study.set_user_attr("fp32_accuracy", evaluator.fp32_accuracy)
    study.set_user_attr("space_operators", list(space.operators or ()))
    return run_search(study, space, GridStrategy(), evaluator, table_size(space), None, on_trial)


@dataclass(frozen=True)
class Entry:
    values: tuple[float, float] | None  # None: the config failed
    attrs: dict[str, Any]


def pooled_speedup(trial_speedup: float, trial_attrs: dict, check: dict) -> float:
    """The speedup of every independent measurement the table holds of one config (its
    trial and its confirmation), geometric mean weighted by timed pairs; the confirmation
    alone when pair counts are missing. A confirmation can be a fluke too: trial 5 of the
    shipped table read 1.48x in its trial and 1.67x confirmed, then 1.52x and 1.55x in two
    later re-measurements (24 s each)."""
    trial_pairs = trial_attrs.get("timing", {}).get("pairs")
    check_pairs = check.get("pairs")
    if not trial_pairs or not check_pairs:
        return float(check["speedup"])
    logs = trial_pairs * math.log(trial_speedup) + check_pairs * math.log(check["speedup"])
    return math.exp(logs / (trial_pairs + check_pairs))


@dataclass(frozen=True)
class Table:
    """Every config's recorded outcome, by config key, and the pooled speedups of the configs
    confirmed at build (`confirmed`, by config key): a strategy sees the trial's own
    numbers, as in a search; the hypervolume of what it found is scored with every
    measurement the table holds (`pooled_speedup`)."""

    entries: dict[str, Entry]
    space: SearchSpace
    attrs: dict[str, Any]  # the table study's user attributes
    confirmed: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_study(cls, study: optuna.Study, space: SearchSpace | None = None) -> Table:
        attrs = dict(study.user_attrs)
        if space is None:
            if "space_text" not in attrs or "space_operators" not in attrs:
                raise QsearchError(
                    f"study {study.study_name!r} must be a table built by --build, but it does "
                    f"not record its space"
                )
            space = SearchSpace.from_text(attrs["space_text"], attrs.get("space_source", "<table>"))
            space = space.resolve(attrs["space_operators"])
        entries: dict[str, Entry] = {}
        checks = confirmations(study)
        confirmed: dict[str, float] = {}
        for r in records(study):
            # a same-graph copy answers its own config; other copies, invalid combinations
            # and presets do not
            if not r.answers or r.attrs.get(REFERENCE):
                continue
            entries.setdefault(r.key, Entry(r.values, r.attrs))
            check = checks.get(r.number, {})
            if r.values is not None and "speedup" in check:
                confirmed.setdefault(r.key, pooled_speedup(r.values[1], r.attrs, check))
        table = cls(entries, space, attrs, confirmed)
        missing = table_size(space) - sum(c.key in entries for c in all_configs(space))
        if missing:
            raise QsearchError(
                f"table {study.study_name!r} must hold every config of space {space.name!r}, "
                f"but {missing} of {table_size(space)} are missing: run --build again to finish"
            )
        return table

    @property
    def fp32_accuracy(self) -> float:
        return float(self.attrs["fp32_accuracy"])

    def points(self, keys: Iterable[str] | None = None) -> dict[str, tuple[float, float]]:
        """(metric, speedup) of the evaluated configs among `keys` (default all), with the
        confirmed speedup where the table holds one."""
        chosen = self.entries if keys is None else {k: self.entries[k] for k in keys}
        return {
            k: (e.values[0], self.confirmed.get(k, e.values[1]))
            for k, e in chosen.items()
            if e.values is not None
        }


class TableEvaluator:
    """An evaluator that looks configs up in a table: the recorded accuracy, speedup and
    attributes (so the beam's tie intervals are the measured ones), or the recorded failure."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self.calls: list[str] = []
        self.missing: list[str] = []

    @property
    def fp32_accuracy(self) -> float:
        return self.table.fp32_accuracy

    def evaluate(self, config, context=None) -> TrialResult:
        self.calls.append(config.key)
        entry = self.table.entries.get(config.key)
        if entry is None:  # the runner would record it as a failure: remember to refuse it
            self.missing.append(config.describe())
            raise TrialError(f"config {config.describe()} is not in the table")
        if entry.values is None and PRUNE_EVIDENCE in entry.attrs:
            reason = entry.attrs.get("fail_reason", "pruned")
            raise TrialPruned(reason, entry.attrs[PRUNE_EVIDENCE], dict(entry.attrs))
        if entry.values is None:
            raise TrialError(entry.attrs.get("fail_reason", "failed (no reason recorded)"))
        return TrialResult(entry.values[0], entry.values[1], dict(entry.attrs))
