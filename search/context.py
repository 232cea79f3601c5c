"""What a trial needs to know about the study it joins, as plain data.

`trial_context(study)` is read just before each trial (`runner.evaluate_into`), so the
evaluator never touches the study: it can run in another process, and the context, a frozen
dataclass of plain values, pickles with it.

It also carries the block spread of the study's trials timed on this host
(`search.stats.Spread`), which the trial's interval borrows: read from the study, a resumed
search and every worker sharing a study on one machine lend each trial the spread of all
the trials before it, not only of those their own process timed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import optuna
from optuna.trial import TrialState

from search.liveness import HOST
from search.measure import lend_blocks
from search.ranking import non_dominated
from search.results import pooled_speeds
from search.stats import Spread
from search.trial_kind import EVALUATIONS, TrialKind, trial_kind

GRAPHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


@dataclass(frozen=True)
class TrialContext:
    """`known_graphs`: graph key (quantized file + session options) -> the trial that first
    measured it, so an equal graph is copied, not measured again. `frontier`: (accuracy,
    speedup lower bound) of the non-dominated measured configs, so timing can stop once a
    config's speedup upper bound shows it cannot join them (racing). `spread`: pairs per
    block -> the block spread of the study's trials timed on this host (empty: the worker's
    own is lent, `Evaluator.spread`)."""

    known_graphs: Mapping[str, int] = field(default_factory=dict)
    frontier: tuple[tuple[float, float], ...] = ()
    spread: Mapping[int, Spread] = field(default_factory=dict)


def trial_context(study: optuna.Study) -> TrialContext:
    """The context of the next trial of `study`: graphs measured and the current frontier
    (each config's pooled interval, as in the report: `results.pooled_speeds`)."""
    graphs: dict[str, int] = {}
    points: list[tuple[float, float]] = []
    spread: dict[int, Spread] = {}
    speeds = pooled_speeds(study)
    for t in study.get_trials(deepcopy=False, states=GRAPHED):
        a, kind = t.user_attrs, trial_kind(t)
        if kind not in EVALUATIONS:  # copies, invalid combinations, interruptions
            continue
        if a.get("graph_key"):
            graphs.setdefault(a["graph_key"], t.number)
        if kind == TrialKind.MEASURED and t.values:
            points.append((float(t.values[0]), float(speeds[t.number].low)))
            timing = a.get("timing") or {}
            if (a.get("worker") or {}).get("host") == HOST and timing.get("block_size"):
                logs, loaded = timing.get("block_logs", []), bool(timing.get("loaded"))
                lend_blocks(spread, int(timing["block_size"]), logs, loaded)
    front = tuple(points[i] for i in non_dominated(points)) if points else ()
    return TrialContext(known_graphs=graphs, frontier=front, spread=spread)
