"""Completing the accuracy of configs whose scoring stopped early, where they may be on the
frontier.

Where scoring costs more than timing (a BERT-base-size model), a trial scores only until the
search's question about the config is answered (`search.early`: dominated by the frontier,
or decided within or beyond `--max-drop`), and its trial value is estimated from the
examples seen (`search.scoring.Scorer.result`). The beam needs no more than that; the
frontier does: its accuracies are what the report, `show` and `export --best` print. So
before the search reports (and again after the confirmation, whose pooled speeds may reorder
the configs), every such config that could be on the frontier at its metric's ceiling (the
exact bound at its last look) is scored on every example, and the frontier is read again,
until none is left.

The completed metric lives in the study's user attributes (`accuracy_complete:<trial>`), as
pooled speeds do (`search.pooled`), since a finished Optuna trial cannot be changed:
`search.results.trial_rows` reads it, so every view shows the same accuracy. Optuna's own
views (`optuna best-trials`, the dashboard's trial list) show the trial values. This module
reads the record; `search.confirm.complete_frontier` writes it, beside the confirmation.
"""

from __future__ import annotations

import optuna
import pandas as pd

from search.ranking import dominates

COMPLETE_PREFIX = "accuracy_complete:"  # + trial number: its metric on every example


def completed(study: optuna.Study) -> dict[int, dict]:
    """Each completed trial's record: accuracy (on every example), examples, seconds, the
    paired difference from fp32 where the metric has labels; or an error."""
    return {
        int(key[len(COMPLETE_PREFIX) :]): dict(value)
        for key, value in study.user_attrs.items()
        if key.startswith(COMPLETE_PREFIX)
    }


def ceiling(trial: optuna.trial.FrozenTrial) -> float | None:
    """The most a partly scored trial's metric could be on every example (the exact bound
    at its last look); None for a trial scored on every example."""
    stopped = trial.user_attrs.get("scoring_stopped")
    if not trial.user_attrs.get("accuracy_examples") or not stopped:
        return None
    return float(stopped.get("metric_ceiling", trial.values[0]))


def to_complete(study: optuna.Study, rows: pd.DataFrame) -> list[int]:
    """Partly scored trials (`rows`: `trial_rows`, completions applied) that no other row
    dominates with the trial at its metric's ceiling, fastest first: those the frontier may
    hold once their metric is known."""
    if rows.empty:
        return []
    partial = rows[rows["scored_on"].notna()]
    trials = study.get_trials(deepcopy=False)
    points = {int(r.trial): (r.accuracy, r.speedup) for r in rows.itertuples()}
    out = []
    for r in partial.sort_values("speedup", ascending=False).itertuples():
        top = ceiling(trials[int(r.trial)])
        if top is None:
            continue
        mine = (max(top, r.accuracy), r.speedup)
        if not any(dominates(p, mine) for n, p in points.items() if n != int(r.trial)):
            out.append(int(r.trial))
    return out
