"""Killing `qsearch run` at any moment loses nothing that finished, and the same command
resumes to the planned budget: SIGKILL mid-trial, several times; SIGTERM; SIGINT."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from search.liveness import is_interrupted
from search.runner import evaluated_count
from search.strategies.base import records

BUDGET = 7


def command(task_dir, study: str, url: str) -> list[str]:
    args = ["run", "--task-dir", task_dir, "--space", "dynamic", "--beam", "2"]
    args += ["--trials", BUDGET, "--study", study, "--storage", url]
    args += ["--timing-seconds", "1", "--no-presets", "--no-confirm", "--no-report"]
    return [sys.executable, "-m", "search.cli", *map(str, args)]


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


def check_study(study: optuna.Study, interrupted: int) -> None:
    assert evaluated_count(study) == BUDGET
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    evaluated = [r for r in records(study) if r.attrs.get("duplicate_of") is None]
    keys = [r.key for r in evaluated]
    assert len(keys) == len(set(keys)), "a finished config was evaluated again"
    cut = [t for t in study.get_trials() if is_interrupted(t)]
    assert len(cut) == interrupted
    # every interrupted config was evaluated to the end later
    assert {t.user_attrs["config_key"] for t in cut} <= set(keys)


def test_sigkill_mid_trial_three_times_then_resume(tmp_path, tiny_task_dir):
    url = f"sqlite:///{tmp_path}/killed.db"
    cmd = command(tiny_task_dir, "killed", url)
    done = 0
    for _ in range(3):
        worker = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL)
        done = wait_for_running_trial("killed", url, done)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
    final = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stdout + final.stderr
    assert "already evaluated" in final.stdout
    check_study(optuna.load_study(study_name="killed", storage=url), interrupted=3)


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
