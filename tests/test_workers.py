"""Several workers on one study: shared work without duplicates, on SQLite and on a real
PostgreSQL server; dead workers' trials are detected and their configs evaluated again."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import datetime, timedelta
from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState

from search import liveness
from search.confirm import confirm_frontier
from search.results import confirmations
from search.runner import evaluated_count, run_search
from search.space import load_space
from search.strategies import make_strategy
from search.strategies.base import records
from tests.fakes import FP32, FakeEvaluator
from tests.postgres import postgres_server

MODEL_OPS = ["Add", "Gather", "Gemm", "MatMul", "Mul", "Softmax", "Transpose", "Where"]


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/shared.db"
    else:
        with postgres_server() as url:
            yield url


def qsearch(*args, cwd) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "search.cli", *map(str, args)],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_two_workers_share_one_study_without_duplicates(storage_url, tmp_path, tiny_task_dir):
    args = ["run", "--task-dir", tiny_task_dir, "--space", "dynamic", "--beam", "2"]
    args += ["--trials", "8", "--study", "shared", "--storage", storage_url]
    args += ["--timing-seconds", "1", "--no-presets", "--no-report"]
    workers = [qsearch(*args, cwd=tmp_path) for _ in range(2)]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs

    study = optuna.load_study(study_name="shared", storage=storage_url)
    assert evaluated_count(study) == 8
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    evaluated = [r for r in records(study) if r.attrs.get("duplicate_of") is None]
    keys = [r.key for r in evaluated]
    assert len(keys) == len(set(keys)), "a config was evaluated twice"
    pids = {r.attrs["worker_pid"] for r in evaluated}
    assert len(pids) == 2, f"one worker did all the work: {outputs}"
    # Every trial a worker ran says which CPU ran it, failed ones too (a beam driven by noisy
    # timings can reach a config the tiny model fails on: that trial records its reason).
    seen = [(r.number, r.kind, r.attrs.get("fail_reason")) for r in evaluated]
    assert all("cpu" in (r.attrs.get("worker") or {}) for r in evaluated), seen
    # beam rounds stay consistent: no trial of round r started before round r-1 was finished
    trials = {t.number: t for t in study.get_trials()}
    by_round: dict[int, list] = {}
    for r in evaluated:
        if "beam_round" in r.attrs:  # the seed recipes come before the beam's rounds
            by_round.setdefault(r.attrs["beam_round"], []).append(trials[r.number])
    assert len(by_round) >= 2
    for number in sorted(by_round)[1:]:
        finished = max(t.datetime_complete for t in by_round[number - 1])
        started = min(t.datetime_start for t in by_round[number])
        assert started >= finished
    # exactly one worker confirmed the frontier: the one that finished the last trial
    checks = confirmations(study)
    assert checks, outputs
    confirmed_by = {(c["worker_host"], c["worker_pid"]) for c in checks.values()}
    last = max(
        (t for t in study.get_trials() if "worker_pid" in t.user_attrs),
        key=lambda t: (t.datetime_complete, t.number),
    )
    assert confirmed_by == {(last.user_attrs["worker_host"], last.user_attrs["worker_pid"])}
    assert last.user_attrs["worker_pid"] in {w.pid for w in workers}
    shown = [o for o in outputs if "configs, round" in o]  # the stage its progress shows
    assert len(shown) == 1, outputs


class Retimer:
    def __init__(self):
        self.calls = []

    def retime_round(self, configs, seconds=None, fresh_sessions=False, **_):
        self.calls += [c.operators for c in configs]
        return [SimpleNamespace(ratio=1.5, low=1.4, high=1.6, loaded=False, pairs=4)] * len(configs)

    def end_rounds(self):
        pass


def finished_study(host: str, pid: int) -> optuna.Study:
    """A study whose one trial was finished by the worker `host`/`pid`."""
    study = optuna.create_study(directions=["maximize", "maximize"])
    study.set_user_attr("fp32_accuracy", FP32)
    config = {"mode": "dynamic", "operators": ["MatMul"]}
    attrs = {"config": config, "speedup_low": 1.4, "speedup_high": 1.6, "description": "MatMul"}
    study.add_trial(
        optuna.trial.create_trial(
            values=[FP32, 1.5], user_attrs={**attrs, "worker_host": host, "worker_pid": pid}
        )
    )
    return study


def _dead_pid() -> int:
    return int(
        subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], **_out).stdout
    )


@pytest.mark.parametrize(
    ("host", "pid", "minutes_later", "confirms"),
    [
        (liveness.HOST, os.getpid(), 0, True),  # this worker finished last
        (liveness.HOST, os.getppid(), 0, False),  # a live worker here did: it confirms
        (liveness.HOST, None, 0, True),  # a dead one here did: whoever resumes confirms
        ("another-machine", 1, 0, False),  # a worker elsewhere just did: it confirms
        ("another-machine", 1, 10, True),  # ...long ago: gone, the resuming one confirms
    ],
    ids=["self", "live-here", "dead-here", "elsewhere-now", "elsewhere-long-ago"],
)
def test_only_the_worker_that_finished_the_last_trial_confirms(
    host, pid, minutes_later, confirms, monkeypatch
):
    import search.confirm

    study = finished_study(host, _dead_pid() if pid is None else pid)
    later = datetime.now() + timedelta(minutes=minutes_later)
    monkeypatch.setattr(search.confirm, "datetime", SimpleNamespace(now=lambda: later))
    retimer = Retimer()
    done = confirm_frontier(study, retimer, seconds=1.0)
    assert bool(retimer.calls) == confirms and bool(done) == confirms
    if confirms:
        assert done[0]["worker_pid"] == os.getpid() and done[0]["worker_host"] == liveness.HOST


def heartbeat_study(tmp_path, interval=1, grace=2):
    storage = optuna.storages.RDBStorage(
        f"sqlite:///{tmp_path}/hb.db", heartbeat_interval=interval, grace_period=grace
    )
    study = optuna.create_study(directions=["maximize", "maximize"], storage=storage)
    study.set_user_attr("fp32_accuracy", FP32)
    return study


def start_trial(study, space, host: str, pid: int):
    config = space.default_config(["MatMul"])
    study.enqueue_trial(space.params(config))
    trial = study.ask()
    assert space.suggest(trial).key == config.key
    trial.set_user_attr("config_key", config.key)
    trial.set_user_attr("worker_host", host)
    trial.set_user_attr("worker_pid", pid)
    return trial, config


def test_a_dead_worker_on_this_host_is_detected_at_once(tmp_path):
    space = load_space("operators").resolve(MODEL_OPS)
    study = heartbeat_study(tmp_path, interval=60, grace=600)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], **_out)
    trial, _ = start_trial(study, space, liveness.HOST, int(dead.stdout))
    study._storage.record_heartbeat(trial._trial_id)
    alive, _ = start_trial(study, space, liveness.HOST, os.getppid())
    assert liveness.recover_stale(study) == [trial.number]
    frozen = study.get_trials()
    assert liveness.is_interrupted(frozen[trial.number])
    assert frozen[alive.number].state == TrialState.RUNNING  # its worker lives: left alone


_out = dict(capture_output=True, text=True, check=True)


def test_another_hosts_silent_trial_fails_after_the_grace_period_and_is_redone(tmp_path):
    space = load_space("operators").resolve(MODEL_OPS)
    study = heartbeat_study(tmp_path, interval=1, grace=2)
    trial, config = start_trial(study, space, "another-machine", 1)
    study._storage.record_heartbeat(trial._trial_id)
    assert liveness.recover_stale(study) == []  # still within the grace period
    time.sleep(3.5)
    assert liveness.recover_stale(study) == [trial.number]
    evaluator = FakeEvaluator()
    run_search(study, space, make_strategy(2, None), evaluator, trials=3)
    assert config.key in evaluator.calls, "the interrupted config was evaluated again"
    assert evaluated_count(study) == 3
    rows = [r for r in records(study) if r.key == config.key]
    assert len(rows) == 1 and rows[0].state == TrialState.COMPLETE


def test_a_live_trial_keeps_its_heartbeat(tmp_path):
    space = load_space("operators").resolve(MODEL_OPS)
    study = heartbeat_study(tmp_path, interval=1, grace=2)
    trial, _ = start_trial(study, space, "another-machine", 1)
    with liveness.Heartbeat(study, trial):
        time.sleep(3.5)
        assert liveness.recover_stale(study) == []
    assert study.get_trials()[trial.number].state == TrialState.RUNNING
