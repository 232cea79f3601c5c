"""Confirmation: re-measure the frontier so a lucky measurement cannot put a config on it.

The configs on the Pareto frontier, and those whose speedup interval reaches a frontier
config's at no worse accuracy, are timed again, independently. The new measurement replaces
the first in the frontier the report shows (the first one was selected for being high, so it
is biased upward); both are kept. Confirmations live in the study's user attributes
(`confirmations`), since a finished Optuna trial cannot be changed: the study stays the one
record of the search.

Of several workers sharing a study, the one that finished its last trial confirms: the
others reach the end together with it (one waiting for the other's last trial sees the
budget reached at the moment that worker does), so "nothing is running elsewhere" alone
would let all of them re-time the same frontier side by side.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime

import optuna
import pandas as pd

from search.config import QuantConfig
from search.errors import TrialError
from search.liveness import GRACE_PERIOD, HOST, is_interrupted, worker_id
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


def confirmer_elsewhere(study: optuna.Study) -> bool:
    """Whether another live worker finished the study's last trial, so it confirms and this
    one does not. A worker on this host is alive while its pid is; one on another host is
    presumed alive for GRACE_PERIOD after its last trial (no heartbeat is recorded between
    trials), so a study resumed later is confirmed by whoever resumes it. (Optuna stamps
    times in the worker's local time: a host in another time zone reads as long gone, and
    both confirm, as before.)"""
    finished = [
        t
        for t in study.get_trials(deepcopy=False)
        if t.state.is_finished()
        and t.datetime_complete is not None
        and isinstance(t.user_attrs.get("worker_pid"), int)  # claimed by a worker
        and not is_interrupted(t)
    ]
    if not finished:
        return False
    last = max(finished, key=lambda t: (t.datetime_complete, t.number))
    host, pid = last.user_attrs.get("worker_host"), last.user_attrs["worker_pid"]
    if host == HOST:
        return pid != os.getpid() and _pid_alive(pid)
    age = (datetime.now() - last.datetime_complete).total_seconds()  # both local times
    return abs(age) < GRACE_PERIOD


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


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
    what a user acts on); returns all confirmations. Does nothing when another worker
    finished the last trial (`confirmer_elsewhere`): that one confirms."""
    done = confirmations(study)
    if confirmer_elsewhere(study):
        return done
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
            done[number] = {"error": str(exc), **worker_id()}
        else:
            done[number] = {
                "speedup": speed.ratio,
                "low": speed.low,
                "high": speed.high,
                "loaded": speed.loaded,
                "pairs": speed.pairs,
                "seconds": seconds,
                **worker_id(),
            }
        study.set_user_attr(CONFIRMATIONS, {str(k): v for k, v in done.items()})
    return done
