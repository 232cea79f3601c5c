"""Trials in a child process: same results as in-process, and a crash or a hang fails one
trial while the search goes on."""

from __future__ import annotations

import ctypes
import faulthandler
import json
import os
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search.config import QuantConfig
from search.errors import TrialError
from search.isolation import EvaluatorSpec, IsolatedEvaluator, describe_exit
from search.measure import TimingSettings
from search.objective import Evaluator
from search.retime import ROUNDS_DIR
from search.runner import run_search
from search.space import load_space
from search.strategies import make_strategy

FAST = TimingSettings(seconds=0.2, min_blocks=2)


class FaultyEvaluator(Evaluator):
    """A real evaluator that crashes the process when only Gather is quantized and hangs on
    MatMul without fusions, as onnxruntime occasionally does on odd configs."""

    def evaluate(self, config, *args, **kwargs):
        if config.operators == ("Gather",):
            ctypes.string_at(0)  # segmentation fault, like a crash inside a C++ kernel
        if config.operators == ("MatMul",) and config.disabled_fusions:
            time.sleep(3600)
        return super().evaluate(config, *args, **kwargs)


class FaultySpec(EvaluatorSpec):
    def build(self):
        return FaultyEvaluator(self.task, self.timing, self.workdir, self.prune)


def test_isolated_evaluation_matches_in_process(tiny_task):
    config = QuantConfig(mode="dynamic", operators=("MatMul",))
    inline = Evaluator(tiny_task, FAST)
    isolated = IsolatedEvaluator(tiny_task, FAST)
    try:
        here, there = inline.evaluate(config), isolated.evaluate(config)
        assert there.accuracy == here.accuracy
        assert there.attrs["config_key"] == config.key
        assert isolated.fp32_accuracy == inline.fp32_accuracy
        assert isolated.retime(config).ratio > 0
        rounds = [isolated.retime_round([config], seconds=0.1) for _ in range(2)]
        assert all(r[0].ratio > 0 for r in rounds)  # the child keeps the session between rounds
        isolated.end_rounds()
    finally:
        inline.close()
        isolated.close()
    assert not isolated.workdir.exists()


def test_a_crash_or_a_hang_fails_one_trial_and_the_search_goes_on(tiny_task):
    evaluator = IsolatedEvaluator(tiny_task, FAST, time_limit=15, spec_type=FaultySpec)
    space = load_space("dynamic").resolve(tiny_task.operators)
    study = optuna.create_study(directions=["maximize", "maximize"])
    try:
        summary = run_search(study, space, make_strategy(None, "grid"), evaluator, trials=6)
    finally:
        evaluator.close()
    assert summary.evaluated == 6
    trials = study.get_trials(states=(TrialState.COMPLETE, TrialState.FAIL))
    reasons = {
        t.user_attrs["description"]: t.user_attrs.get("fail_reason")
        for t in trials
        if t.state == TrialState.FAIL
    }
    crashed = [t for t in trials if t.user_attrs["config"]["operators"] == ["Gather"]]
    hung = [
        t
        for t in trials
        if t.user_attrs["config"]["operators"] == ["MatMul"]
        and t.user_attrs["config"]["disabled_fusions"]
    ]
    assert crashed and hung, "the grid's first configs include both faults"
    for t in crashed:
        assert t.state == TrialState.FAIL
        assert "SIGSEGV" in t.user_attrs["fail_reason"], reasons
    for t in hung:
        assert t.state == TrialState.FAIL
        assert "time limit of 15 s" in t.user_attrs["fail_reason"], reasons
    healthy = [t for t in trials if t not in crashed and t not in hung]
    assert healthy and all(t.state == TrialState.COMPLETE for t in healthy)
    assert evaluator.starts == 1 + len(crashed) + len(hung)  # replaced after each fault


@pytest.mark.parametrize(
    "code, words", [(-11, "SIGSEGV"), (-9, "out-of-memory"), (-6, "aborted"), (3, "exit code 3")]
)
def test_exit_causes_are_named(code, words):
    assert words in describe_exit(code)


class DiesOnArrival(EvaluatorSpec):
    """A spec the child cannot even unpack: it exits as it is unpickled, before any call."""

    def __reduce__(self):
        return (os._exit, (7,))


def test_a_child_that_dies_at_start_fails_the_call_instead_of_hanging(tiny_task):
    """Before, the child got the task through spawn's pipe, which the parent wrote while
    holding its read end: a child dead before reading left the parent blocked for ever."""
    faulthandler.dump_traceback_later(300, exit=True)  # a hang fails the run, loudly
    evaluator = IsolatedEvaluator(tiny_task, FAST, time_limit=60, spec_type=DiesOnArrival)
    try:
        for _ in range(2):  # and again with a new child
            with pytest.raises(TrialError, match="exit code 7"):
                evaluator.evaluate(QuantConfig(operators=("MatMul",)))
        assert evaluator.starts == 2
    finally:
        faulthandler.cancel_dump_traceback_later()
        evaluator.close()


def test_renewed_rounds_go_on_in_a_new_child_from_where_the_last_stopped(tiny_task):
    """A confirmation round in a new child (`renew`, as `search.confirm` does each round)
    times the file the last child quantized, from the batch where that child's round stopped;
    ending the rounds removes the files, whichever child wrote them."""
    config = QuantConfig(mode="dynamic", operators=("MatMul",))
    isolated = IsolatedEvaluator(tiny_task, FAST)
    state = isolated.workdir / ROUNDS_DIR / f"{config.key}.json"
    try:
        (first,) = isolated.retime_round([config], seconds=0.1)
        pid, saved = isolated._process.pid, json.loads(state.read_text())
        model = Path(saved["model"])
        written = model.stat().st_mtime_ns
        assert saved["next_batch"] == first.pairs
        isolated.renew()
        (second,) = isolated.retime_round([config], seconds=0.1)
        assert isolated._process.pid != pid and isolated.starts == 2
        saved = json.loads(state.read_text())
        assert saved["model"] == str(model) and model.stat().st_mtime_ns == written  # not again
        assert saved["next_batch"] == first.pairs + second.pairs
        isolated.end_rounds()
        assert not (isolated.workdir / ROUNDS_DIR).exists()
    finally:
        isolated.close()


def test_a_sibling_is_another_live_child_that_goes_on_from_where_the_other_stopped(tiny_task):
    """Rounds taking turns between a child and its `sibling` (as `benchmarks/confirmation.py`'s
    round_robin_children does) run in two processes, each kept through its rounds; a child
    times the file the other quantized and starts its round where the other's last round
    stopped, so the rounds go on through the timing batches; closing the sibling leaves the
    shared folder to the first child."""
    config = QuantConfig(mode="dynamic", operators=("MatMul",))
    first = IsolatedEvaluator(tiny_task, FAST)
    second = first.sibling()
    state = first.workdir / ROUNDS_DIR / f"{config.key}.json"
    try:
        timed = [c.retime_round([config], seconds=0.1)[0] for c in (first, second, first)]
        assert first.starts == second.starts == 1  # each started once, kept through its rounds
        assert first._process.pid != second._process.pid and second.workdir == first.workdir
        pairs = sum(s.pairs for s in timed)
        assert json.loads(state.read_text())["next_batch"] == pairs
        # the first child's own count went on past the round the second timed in between
        assert first.call("_round_batch")[config.key] == pairs
        second.close()
        assert first.workdir.is_dir() and state.is_file()  # the first child's, to remove
    finally:
        second.close()
        first.close()
    assert not first.workdir.exists()
