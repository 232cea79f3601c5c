"""What a trial of a study is, in one vocabulary: every module asks `trial_kind`.

A study holds more than measurements: copies of configs already answered, copies of a
trial that quantized to the same graph, configs answered early as hopeless, invalid
combinations refused before anything ran, Optimum's presets, failures, and trials cut short
when their worker died. Which one a trial is used to be re-derived from combinations of user
attributes in half a dozen modules, and they disagreed (an interrupted same-graph copy kept
its `duplicate_of` and was counted as a copy). Here it is decided once, state first: an
interrupted trial is interrupted whatever attributes its worker had written before it died.

This module reads trials only; writing the attributes is the runner's and liveness's job.
"""

from __future__ import annotations

from enum import StrEnum

from optuna.trial import FrozenTrial, TrialState

# Attributes written by the trial loop that decide a trial's kind.
DUPLICATE_OF = "duplicate_of"  # trial number whose answer this trial copies
SAME_GRAPH_AS = "same_graph_as"  # ... because this config quantized to that trial's graph
PRUNE_EVIDENCE = "prune_evidence"  # the interim look that showed the config hopeless
FAIL_REASON = "fail_reason"  # why a trial failed or was pruned
REFERENCE = "reference"  # the name of the reference config (Optimum's presets)
INTERRUPTED = "interrupted"  # set when a trial is found cut short (see liveness)
# What a trial cut short must not keep: it answers nothing, so it must not read as an answer.
ANSWER_ATTRS = (DUPLICATE_OF, SAME_GRAPH_AS, PRUNE_EVIDENCE, FAIL_REASON)


class TrialKind(StrEnum):
    MEASURED = "measured"  # quantized, scored and timed: values of its own
    SAME_GRAPH = "same graph"  # its config quantized to a graph already measured: copied
    DUPLICATE = "duplicate"  # a config already answered, or under way on another worker
    PRUNED = "pruned"  # answered early as hopeless, with the evidence
    INVALID = "invalid"  # a combination the space refuses, before anything ran
    FAILED = "failed"  # failed in the quantizer or onnxruntime, with its reason
    INTERRUPTED = "interrupted"  # its worker died or was stopped mid-trial: to run again
    UNDER_WAY = "under way"  # running or waiting, not finished yet


# Kinds that settle their config: it is never evaluated again.
ANSWERS = frozenset({TrialKind.MEASURED, TrialKind.SAME_GRAPH, TrialKind.PRUNED, TrialKind.FAILED})
# Kinds that cost a full evaluation: what the budget counts (a same-graph copy costs ~1 s).
EVALUATIONS = frozenset({TrialKind.MEASURED, TrialKind.PRUNED, TrialKind.FAILED})


def trial_kind(trial: FrozenTrial) -> TrialKind:
    """The one answer to "what is this trial?"."""
    a = trial.user_attrs
    if trial.state in (TrialState.RUNNING, TrialState.WAITING):
        return TrialKind.UNDER_WAY
    if trial.state == TrialState.FAIL and (a.get(INTERRUPTED) or a.get(FAIL_REASON) is None):
        return TrialKind.INTERRUPTED
    if a.get(SAME_GRAPH_AS) is not None:
        return TrialKind.SAME_GRAPH
    if a.get(DUPLICATE_OF) is not None:
        return TrialKind.DUPLICATE
    if trial.state == TrialState.COMPLETE:
        return TrialKind.MEASURED
    if trial.state == TrialState.PRUNED:
        return TrialKind.PRUNED if a.get(PRUNE_EVIDENCE) is not None else TrialKind.INVALID
    return TrialKind.FAILED


def answers_config(trial: FrozenTrial) -> bool:
    """Whether the trial settles its config (`config_key`), so it is not evaluated again."""
    return trial_kind(trial) in ANSWERS and trial.user_attrs.get("config_key") is not None


def counts_toward_budget(trial: FrozenTrial) -> bool:
    """Evaluated configs count (pruned and failed ones too: they are answers); copies,
    references (Optimum's presets), invalid combinations and interruptions do not."""
    return trial_kind(trial) in EVALUATIONS and not is_reference(trial)


def is_measured(trial: FrozenTrial) -> bool:
    """A finished trial with values of its own: a row of the study's tables."""
    return trial_kind(trial) == TrialKind.MEASURED and bool(trial.values)


def is_reference(trial: FrozenTrial) -> bool:
    return bool(trial.user_attrs.get(REFERENCE))


def is_interrupted(trial: FrozenTrial) -> bool:
    return trial_kind(trial) == TrialKind.INTERRUPTED


def source_number(trial: FrozenTrial) -> int | None:
    """The trial whose measurement a copy carries (None for a trial that is its own)."""
    if trial_kind(trial) in (TrialKind.SAME_GRAPH, TrialKind.DUPLICATE):
        return trial.user_attrs.get(DUPLICATE_OF)
    return None


def why(trial: FrozenTrial) -> str:
    """The reason a trial is not a measurement, in words, for tables and messages."""
    kind = trial_kind(trial)
    if kind == TrialKind.INTERRUPTED:
        return "interrupted: its worker stopped mid-trial (evaluated again)"
    return trial.user_attrs.get(FAIL_REASON) or kind.value
