"""Killing `qsearch run` at any moment loses nothing that finished, and the same command
resumes to the planned budget: SIGKILL of each kind of trial (measured, same-graph copy,
pruned) at the worst moment, chosen by the test; SIGTERM; SIGINT."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search.runner import evaluated_count
from search.trial_kind import ANSWER_ATTRS, answers_config, is_interrupted

BUDGET = 7
KILLPOINT = Path(__file__).with_name("killpoint.py")
# Static QDQ of the residual Adds collapses the tiny model (agreement with fp32 ~0.17 at the
# first look), so round 0 of the beam holds a pruned trial, a measured one (Gather, MatMul),
# and per-channel Gather quantizes to the same graph as per-tensor Gather: all three kinds.
SPACE = """
name = "resume"
[quantization]
mode = ["static"]
format = ["QDQ"]
operators = ["Add", "Gather", "MatMul"]
per_channel = [false, true]
[calibration]
method = ["minmax"]
"""


def arguments(task_dir, study: str, url: str, space: str = "dynamic") -> list[str]:
    args = ["run", "--task-dir", task_dir, "--space", space, "--beam", "2"]
    args += ["--trials", BUDGET, "--study", study, "--storage", url]
    args += ["--timing-seconds", "1", "--no-presets", "--no-confirm", "--no-report"]
    return list(map(str, args))


def command(task_dir, study: str, url: str) -> list[str]:
    return [sys.executable, "-m", "search.cli", *arguments(task_dir, study, url)]


def study_now(name: str, url: str) -> optuna.Study | None:
    try:
        return optuna.load_study(study_name=name, storage=url)
    except Exception:  # noqa: BLE001 - not created yet, or the schema is being written
        return None


def wait_for_running_trial(name: str, url: str, finished_before: int, timeout: float = 180):
    """Until a trial is under way after at least one more has finished: kill mid-trial."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        study = study_now(name, url)
        if study is not None:
            trials = study.get_trials(deepcopy=False)
            done = sum(t.state == TrialState.COMPLETE for t in trials)
            running = [
                t for t in trials if t.state == TrialState.RUNNING and "config_key" in t.user_attrs
            ]
            if running and done > finished_before:
                return done
        time.sleep(0.2)
    raise AssertionError("no trial started in time")


def check_study(study: optuna.Study, interrupted: int) -> list[optuna.trial.FrozenTrial]:
    """The resumed study is whole; returns its interrupted trials."""
    assert evaluated_count(study) == BUDGET
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    answers = [t for t in study.get_trials() if answers_config(t)]
    keys = [t.user_attrs["config_key"] for t in answers]
    assert len(keys) == len(set(keys)), "a finished config was answered again"
    cut = [t for t in study.get_trials() if is_interrupted(t)]
    assert len(cut) == interrupted
    for trial in cut:  # it answered nothing, and reads as no answer
        assert trial.state == TrialState.FAIL
        assert all(trial.user_attrs.get(k) is None for k in ANSWER_ATTRS), trial.user_attrs
    # every interrupted config was answered to the end later
    assert {t.user_attrs["config_key"] for t in cut} <= set(keys)
    return cut


def test_sigkill_of_each_kind_of_trial_then_resume(tmp_path, tiny_task_dir):
    """Each kill lands just before the study is told a trial's outcome, when its answer
    attributes are written but its state is not; the resumed search must treat each such
    trial as interrupted (not as a copy, a prune or a failure) and answer its config."""
    (tmp_path / "resume.toml").write_text(SPACE)
    url = f"sqlite:///{tmp_path}/killed.db"
    args = arguments(tiny_task_dir, "killed", url, space="resume.toml")
    args += ["--metric", "agreement", "--prune-drop", "0.2"]
    record = tmp_path / "kills.txt"
    for kind in ("pruned", "measured", "same-graph"):
        worker = subprocess.run(
            [sys.executable, str(KILLPOINT), kind, str(record), "--", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert worker.returncode == -signal.SIGKILL, f"no {kind} trial was told: {worker.stdout}"
    killed = dict(line.split() for line in record.read_text().splitlines())
    assert sorted(killed.values()) == ["measured", "pruned", "same-graph"]

    final = subprocess.run(
        [sys.executable, "-m", "search.cli", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert final.returncode == 0, final.stdout + final.stderr
    assert "already evaluated" in final.stdout
    cut = check_study(optuna.load_study(study_name="killed", storage=url), interrupted=3)
    assert sorted(str(t.number) for t in cut) == sorted(killed)


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_leave_a_valid_study(tmp_path, tiny_task_dir, how):
    url = f"sqlite:///{tmp_path}/stopped.db"
    cmd = command(tiny_task_dir, "stopped", url)
    worker = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    wait_for_running_trial("stopped", url, 0)
    worker.send_signal(how)
    out, _ = worker.communicate(timeout=120)
    study = optuna.load_study(study_name="stopped", storage=url)
    assert not study.get_trials(states=(TrialState.RUNNING,)), "left a trial RUNNING"
    if how == signal.SIGINT:  # first Ctrl-C: the trial under way finishes, then a clean stop
        assert worker.returncode == 0 and "Stopped: interrupted" in out
        assert not any(is_interrupted(t) for t in study.get_trials())
    else:  # SIGTERM: the trial under way is marked interrupted at once
        assert worker.returncode == 143, out
        assert sum(is_interrupted(t) for t in study.get_trials()) == 1
    final = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stdout + final.stderr
    check_study(
        optuna.load_study(study_name="stopped", storage=url),
        interrupted=1 if how == signal.SIGTERM else 0,
    )
