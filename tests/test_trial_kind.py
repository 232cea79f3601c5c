"""One vocabulary for what a trial is: every kind the trial loop writes is named by
`trial_kind`, and a trial cut short reads as interrupted whatever its worker had written."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from search.config import QuantConfig
from search.errors import SameGraph, TrialError, TrialPruned
from search.liveness import mark_interrupted
from search.results import failed_rows, pruned_rows, trial_rows
from search.runner import _known, evaluate_into, evaluated_count
from search.trial_kind import (
    ANSWER_ATTRS,
    TrialKind,
    answers_config,
    counts_toward_budget,
    source_number,
    trial_kind,
)
from tests.fakes import FakeEvaluator

A = QuantConfig(operators=("MatMul",))
B = QuantConfig(operators=("Gather",))
C = QuantConfig(operators=("Gather", "MatMul"))
D = QuantConfig(operators=("Transpose",))


class ScriptedEvaluator(FakeEvaluator):
    """Answers each config as scripted: measured (the fake landscape), same graph as a
    trial, pruned with evidence, or failed."""

    def __init__(self, script: dict[str, object]) -> None:
        super().__init__()
        self.script = script

    def evaluate(self, config, context=None):
        outcome = self.script.get(config.key)
        if isinstance(outcome, BaseException):
            raise outcome
        return super().evaluate(config, context)


def study_of_every_kind() -> optuna.Study:
    study = optuna.create_study(directions=["maximize", "maximize"])
    evaluator = ScriptedEvaluator(
        {
            B.key: SameGraph(0, {"graph_key": "g0"}),
            C.key: TrialPruned("pruned after 24 of 192 examples", {"examples_seen": 24}, {}),
            D.key: TrialError("onnxruntime refused it"),
        }
    )
    known: dict[str, int] = {}
    for config in (A, B, C, D, A):  # the last one repeats A: a plain duplicate
        trial = study.ask()
        trial.set_user_attr("config_key", config.key)
        evaluate_into(study, trial, config, evaluator, known)
    invalid = study.ask()
    invalid.set_user_attr("fail_reason", "invalid combination: static needs a format")
    study.tell(invalid, state=TrialState.PRUNED)
    reference = study.ask()
    reference.set_user_attr("reference", "optimum avx2")
    reference.set_user_attr("config_key", "preset")
    study.tell(reference, [0.79, 1.3])
    study.ask()  # under way
    return study


def test_every_kind_the_trial_loop_writes_has_one_name():
    study = study_of_every_kind()
    kinds = [trial_kind(t) for t in study.get_trials()]
    assert kinds == [
        TrialKind.MEASURED,
        TrialKind.SAME_GRAPH,
        TrialKind.PRUNED,
        TrialKind.FAILED,
        TrialKind.DUPLICATE,
        TrialKind.INVALID,
        TrialKind.MEASURED,  # a reference preset is measured; it is not in the budget
        TrialKind.UNDER_WAY,
    ]
    trials = study.get_trials()
    assert [answers_config(t) for t in trials] == [1, 1, 1, 1, 0, 0, 1, 0]
    assert [counts_toward_budget(t) for t in trials] == [1, 0, 1, 1, 0, 0, 0, 0]
    assert evaluated_count(study) == 3
    assert _known(study) == {A.key: 0, B.key: 1, C.key: 2, D.key: 3, "preset": 6}
    assert [source_number(t) for t in trials[:5]] == [None, 0, None, None, 0]
    # the tables ask the same question
    assert list(trial_rows(study)["trial"]) == [0, 6]
    assert list(pruned_rows(study)["trial"]) == [2]
    assert list(failed_rows(study)["trial"]) == [2, 3, 5]


@pytest.mark.parametrize("number", [1, 2, 3])  # a same-graph copy, a prune, a failure
def test_a_trial_cut_after_its_answer_was_written_is_interrupted_and_answers_nothing(number):
    """A worker writes a trial's answer attributes, then its state; killed in between, the
    trial is RUNNING with an answer. Recovery must make it an interruption, not an answer."""
    source = study_of_every_kind()
    study = optuna.create_study(directions=["maximize", "maximize"])
    for frozen in source.get_trials()[:number]:
        study.add_trial(frozen)
    cut = source.get_trials()[number]
    trial = study.ask()
    for key, value in cut.user_attrs.items():  # everything written, nothing told
        trial.set_user_attr(key, value)
    assert any(trial.user_attrs.get(k) is not None for k in ANSWER_ATTRS)
    mark_interrupted(study, trial._trial_id)
    frozen = study.get_trials()[number]
    assert frozen.state == TrialState.FAIL
    assert trial_kind(frozen) == TrialKind.INTERRUPTED
    assert all(frozen.user_attrs.get(k) is None for k in ANSWER_ATTRS)
    assert cut.user_attrs["config_key"] not in _known(study)  # to be evaluated again
    assert failed_rows(study)["reason"].iloc[-1].startswith("interrupted")


def test_an_old_study_s_interrupted_trial_without_the_flag_still_reads_as_interrupted():
    study = optuna.create_study(directions=["maximize", "maximize"])
    trial = study.ask()
    trial.set_user_attr("config_key", A.key)
    study.tell(trial, state=TrialState.FAIL)  # as recover_stale used to leave it
    assert trial_kind(study.get_trials()[0]) == TrialKind.INTERRUPTED
