"""Confirmation: re-measure the frontier so a lucky measurement cannot put a config on it.

The configs on the Pareto frontier, and those whose speedup interval reaches a frontier
config's at no worse accuracy, are timed again, independently. The new measurement replaces
the first in the frontier the report shows (the first one was selected for being high, so it
is biased upward); both are kept. Confirmations live in the study's user attributes
(`confirmations`), since a finished Optuna trial cannot be changed: the study stays the one
record of the search.
"""

from __future__ import annotations

from collections.abc import Callable

import optuna
import pandas as pd

from search.config import QuantConfig
from search.errors import TrialError
from search.objective import Evaluator
from search.ranking import non_dominated
from search.results import CONFIRMATIONS, confirmations, trial_rows

MAX_CONFIRMED = 8


def to_confirm(rows: pd.DataFrame) -> list[int]:
    """Trial numbers of the frontier and of configs within their intervals of it, fastest
    first."""
    if rows.empty:
        return []
    points = rows[["accuracy", "speedup"]].to_numpy()
    front = rows.iloc[non_dominated(points)]
    chosen = set(front["trial"])
    for row in rows.itertuples():
        for f in front.itertuples():
            if row.accuracy >= f.accuracy - 1e-12 and row.speedup_high >= f.speedup_low:
                chosen.add(row.trial)
    ranked = rows[rows["trial"].isin(chosen)].sort_values("speedup", ascending=False)
    return [int(t) for t in ranked["trial"]]


def confirm_frontier(
    study: optuna.Study,
    evaluator: Evaluator,
    on_config: Callable[[int], None] | None = None,
    limit: int = MAX_CONFIRMED,
    seconds: float | None = None,
) -> dict[int, dict]:
    """Re-time what `to_confirm` picks until the frontier, read with the confirmations, is
    all confirmed (a confirmation that lowers a config can promote others), at most `limit`
    new measurements, each with `seconds` of timing (longer than a trial's: the frontier is
    what a user acts on); returns all confirmations."""
    done = confirmations(study)
    trials = study.get_trials(deepcopy=False)
    for _ in range(limit):
        pending = [n for n in to_confirm(trial_rows(study)) if n not in done]
        if not pending:
            break
        number = pending[0]
        if on_config:
            on_config(number)
        config = QuantConfig.from_dict(trials[number].user_attrs["config"])
        try:
            speed = evaluator.retime(config, seconds=seconds)
        except TrialError as exc:
            done[number] = {"error": str(exc)}
        else:
            done[number] = {
                "speedup": speed.ratio,
                "low": speed.low,
                "high": speed.high,
                "loaded": speed.loaded,
                "pairs": speed.pairs,
                "seconds": seconds,
            }
        study.set_user_attr(CONFIRMATIONS, {str(k): v for k, v in done.items()})
    return done
