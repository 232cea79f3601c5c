"""The trial loop: asks the strategy, evaluates, and tells the study, one trial at a time.

Every trial goes through Optuna's ask/tell, so the study holds params, values, failures and
the worker for each. The budget (`trials`) counts the study's evaluated trials, not this
invocation's, so running the same command again after a kill finishes the planned search.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from search.config import QuantConfig
from search.context import trial_context
from search.errors import ConfigError, SameGraph, TrialError, TrialPruned
from search.liveness import (
    Heartbeat,
    mark_interrupted,
    recover_stale,
    running_elsewhere,
    worker_id,
)
from search.objective import Evaluator, TrialResult
from search.space import SearchSpace
from search.strategies.base import FINISHED, SAMPLE, Strategy
from search.trial_kind import (
    DUPLICATE_OF,
    FAIL_REASON,
    PRUNE_EVIDENCE,
    REFERENCE,
    SAME_GRAPH_AS,
    answers_config,
    counts_toward_budget,
    is_interrupted,
    why,
)
from search.worker import worker_info

# Consecutive sampled configs already in the study before a sampler is taken as exhausted.
MAX_CONSECUTIVE_DUPLICATES = 60


@dataclass
class RunSummary:
    evaluated: int = 0
    failed: int = 0
    duplicates: int = 0
    stopped_because: str = ""


def evaluated_count(study: optuna.Study) -> int:
    """Trials that count toward the budget (`trial_kind.counts_toward_budget`)."""
    return sum(counts_toward_budget(t) for t in study.get_trials(deepcopy=False))


def _known(study: optuna.Study) -> dict[str, int]:
    """config key -> number of the trial that answered it first (a same-graph copy answers
    its own config)."""
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False, states=FINISHED):
        if answers_config(t):
            out.setdefault(t.user_attrs["config_key"], t.number)
    return out


def _tell_result(study: optuna.Study, trial: optuna.Trial, result: TrialResult) -> None:
    for k, v in result.attrs.items():
        trial.set_user_attr(k, v)
    study.tell(trial, [result.accuracy, result.speedup])


def _tell_failure(
    study: optuna.Study,
    trial: optuna.Trial,
    config: QuantConfig,
    reason: str,
    attrs: dict | None = None,
) -> None:
    for k, v in (attrs or {}).items():
        trial.set_user_attr(k, v)
    trial.set_user_attr("config", config.to_dict())
    trial.set_user_attr("config_key", config.key)
    trial.set_user_attr("description", config.describe())
    trial.set_user_attr(FAIL_REASON, reason)
    study.tell(trial, state=TrialState.FAIL)


def _failure_attrs(evaluator: Evaluator, exc: BaseException) -> dict:
    """A failure's attributes, with the worker it failed on where the evaluator could not
    say (its trial process died, or the error came from outside it)."""
    attrs = dict(getattr(exc, "attrs", None) or {})
    timing = getattr(evaluator, "timing", None)
    if "worker" not in attrs and timing is not None:
        attrs["worker"] = worker_info(timing.threads)
    return attrs


def _copy(study: optuna.Study, trial: optuna.Trial, number: int) -> None:
    """Tell `trial` with the values (or state and reason) of trial `number`."""
    source = study.get_trials(deepcopy=False)[number]
    trial.set_user_attr(DUPLICATE_OF, source.number)
    if source.state == TrialState.COMPLETE:
        for k in ("speedup_low", "speedup_high", "accuracy_fp32"):
            if k in source.user_attrs:
                trial.set_user_attr(k, source.user_attrs[k])
        study.tell(trial, list(source.values))
    else:
        trial.set_user_attr(FAIL_REASON, why(source))
        study.tell(trial, state=source.state)


def evaluate_into(
    study: optuna.Study,
    trial: optuna.Trial,
    config: QuantConfig,
    evaluator: Evaluator,
    known: dict[str, int],
) -> str:
    """Evaluate `config` as `trial`, or copy an earlier trial of the same config or of the
    same quantized graph; return the outcome (complete, pruned, failed or duplicate)."""
    if config.key in known:
        source = study.get_trials(deepcopy=False)[known[config.key]]
        for k in ("config", "config_key", "description"):
            trial.set_user_attr(k, source.user_attrs.get(k))
        _copy(study, trial, source.number)
        return "duplicate"
    try:
        result = evaluator.evaluate(config, trial_context(study))
    except SameGraph as same:
        for k, v in same.attrs.items():
            trial.set_user_attr(k, v)
        trial.set_user_attr(SAME_GRAPH_AS, same.number)
        _copy(study, trial, same.number)
        known[config.key] = trial.number
        return "duplicate"
    except TrialPruned as pruned:
        for k, v in pruned.attrs.items():
            trial.set_user_attr(k, v)
        trial.set_user_attr(FAIL_REASON, pruned.reason)
        trial.set_user_attr(PRUNE_EVIDENCE, pruned.evidence)
        study.tell(trial, state=TrialState.PRUNED)
        known[config.key] = trial.number
        return "pruned"
    except TrialError as exc:
        _tell_failure(study, trial, config, str(exc), _failure_attrs(evaluator, exc))
        known[config.key] = trial.number
        return "failed"
    except Exception as exc:  # noqa: BLE001 - an unexpected library error fails one trial only
        reason = f"{type(exc).__name__}: {exc}"
        _tell_failure(study, trial, config, reason, _failure_attrs(evaluator, exc))
        known[config.key] = trial.number
        return "failed"
    _tell_result(study, trial, result)
    known[config.key] = trial.number
    return "complete"


@dataclass
class _Pick:
    """What the claim step decided: a trial to evaluate, a trial settled at once, or wait."""

    trial: optuna.Trial | None = None
    config: QuantConfig | None = None
    outcome: str = ""  # "", "duplicate", "invalid", "wait", "done"


def _mark_claimed(trial: optuna.Trial, config: QuantConfig) -> None:
    """What other workers and `recover_stale` read: the config under way and who runs it."""
    trial.set_user_attr("config_key", config.key)
    for key, value in worker_id().items():
        trial.set_user_attr(key, value)


def _claim(
    study: optuna.Study, trial: optuna.Trial, space: SearchSpace, running: dict[str, int]
) -> _Pick:
    """Turn an asked trial into a claim, or settle it at once (invalid, duplicate, taken)."""
    try:
        config = space.suggest(trial)
    except ConfigError as exc:
        trial.set_user_attr(FAIL_REASON, f"invalid combination: {exc}")
        study.tell(trial, state=TrialState.PRUNED)
        return _Pick(outcome="invalid")
    if config.key in running:  # another worker is evaluating it right now
        trial.set_user_attr(DUPLICATE_OF, running[config.key])
        trial.set_user_attr("config_key", config.key)
        trial.set_user_attr(FAIL_REASON, f"being evaluated by trial {running[config.key]}")
        study.tell(trial, state=TrialState.PRUNED)
        return _Pick(outcome="duplicate")
    _mark_claimed(trial, config)
    return _Pick(trial, config)


def _next_pick(
    study: optuna.Study,
    space: SearchSpace,
    strategy: Strategy,
    known: dict[str, int],
    running: dict[str, int],
) -> _Pick:
    """Under the claim lock: the next config nobody has evaluated or is evaluating."""
    proposed = strategy.propose(study, space)
    if proposed != SAMPLE:
        # A strategy whose next proposals depend on what others are evaluating (the beam's
        # next round) waits for them; one that does not (the seeds) is done when nothing of
        # its own is left, and the worker moves on.
        waiting = "wait" if strategy.waits_for_others else "done"
        if not proposed:
            return _Pick(outcome=waiting if running else "done")
        free = [p for p in proposed if p.config.key not in known and p.config.key not in running]
        if not free:  # the round's remaining configs are all being evaluated elsewhere
            return _Pick(outcome=waiting)
        study.enqueue_trial(space.params(free[0].config), user_attrs=free[0].attrs)
    trial = study.ask()
    pick = _claim(study, trial, space, running)
    if pick.config is not None and pick.config.key in known:
        evaluate_into(study, trial, pick.config, None, known)  # copies the earlier trial
        return _Pick(outcome="duplicate")
    return pick


def _evaluate_claimed(
    study: optuna.Study,
    trial: optuna.Trial,
    config: QuantConfig,
    evaluator: Evaluator,
    known: dict[str, int],
) -> str:
    """Evaluate with a heartbeat; a trial cut short (Ctrl-C twice, SIGTERM) is marked
    interrupted, so it is evaluated again on resume instead of staying RUNNING."""
    try:
        with Heartbeat(study, trial):
            return evaluate_into(study, trial, config, evaluator, known)
    except BaseException:
        with contextlib.suppress(Exception):
            mark_interrupted(study, trial._trial_id)
        raise


def run_search(
    study: optuna.Study,
    space: SearchSpace,
    strategy: Strategy,
    evaluator: Evaluator,
    trials: int,
    timeout: float | None = None,
    on_trial: Callable[[optuna.Study, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    lock: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    poll_seconds: float = 2.0,
) -> RunSummary:
    """Run until the study holds `trials` evaluated trials, the strategy is done, or time ends.

    Any number of processes may run this on the same study: each picks its next config under
    `lock` (see `search.liveness.claim_lock`) and skips configs others are evaluating; a
    worker with nothing free waits for the others rather than starting the next beam round.
    """
    summary = RunSummary()
    started = time.monotonic()
    duplicates_in_a_row = 0
    while True:
        recover_stale(study)
        if evaluated_count(study) >= trials:
            summary.stopped_because = f"budget of {trials} trials reached"
            break
        if timeout is not None and time.monotonic() - started >= timeout:
            summary.stopped_because = f"timeout of {timeout:g} s reached"
            break
        if should_stop and should_stop():
            summary.stopped_because = "interrupted"
            break
        with lock():
            running = running_elsewhere(study)
            known = _known(study)
            if evaluated_count(study) + len(running) >= trials:
                pick = _Pick(outcome="wait")  # the budget is filled by trials under way
            else:
                pick = _next_pick(study, space, strategy, known, running)
        if pick.outcome == "done":
            summary.stopped_because = f"{strategy.name} finished: nothing new to evaluate"
            break
        if pick.outcome == "wait":
            time.sleep(poll_seconds)
            continue
        if pick.outcome == "invalid":
            continue
        outcome = pick.outcome  # "duplicate": settled while claiming
        if pick.trial is not None:
            outcome = _evaluate_claimed(study, pick.trial, pick.config, evaluator, known)
        if outcome == "duplicate":
            summary.duplicates += 1
            duplicates_in_a_row += 1
            if duplicates_in_a_row >= MAX_CONSECUTIVE_DUPLICATES:
                summary.stopped_because = (
                    f"{strategy.name} proposed only configs already evaluated "
                    f"{MAX_CONSECUTIVE_DUPLICATES} times in a row: the space looks exhausted"
                )
                break
        else:
            duplicates_in_a_row = 0
            summary.evaluated += 1
            summary.failed += outcome == "failed"
        if on_trial:
            on_trial(study, outcome)
    return summary


def evaluate_references(
    study: optuna.Study,
    references: dict[str, QuantConfig],
    evaluator: Evaluator,
    on_trial: Callable[[optuna.Study, str], None] | None = None,
    lock: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> None:
    """Evaluate reference configs (Optimum's presets) once per study, as parameterless trials.

    Presets that are the same config share one trial, which names all of them. Each is
    claimed under `lock`, so concurrent workers share them out.
    """
    grouped: dict[str, tuple[QuantConfig, list[str]]] = {}
    for name, config in references.items():
        grouped.setdefault(config.key, (config, []))[1].append(name)
    for config, names in grouped.values():
        label = "optimum " + " / ".join(names)
        with lock():
            recover_stale(study)
            taken = {
                t.user_attrs.get(REFERENCE)
                for t in study.get_trials(deepcopy=False)
                if not is_interrupted(t)
            }
            if label in taken:
                continue
            known = _known(study)
            trial = study.ask()
            trial.set_user_attr(REFERENCE, label)
            _mark_claimed(trial, config)
        outcome = _evaluate_claimed(study, trial, config, evaluator, known)
        if on_trial:
            on_trial(study, outcome)
