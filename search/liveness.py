"""Who is working on a study, and who died: heartbeats, stale trials and the claim lock.

Several `qsearch run` processes may share one study (on SQLite on one machine, or on
PostgreSQL across machines), and any of them may be killed at any moment. Three things keep
the study sound:

- every trial carries its worker's host and pid, and a heartbeat (Optuna's RDB heartbeat,
  recorded by a thread while the trial runs, since ask/tell does not record one);
- `recover_stale` fails RUNNING trials whose worker is gone: at once when the worker ran on
  this host and its pid is dead, after the grace period (no heartbeat) otherwise. Such a
  trial is marked interrupted (`mark_interrupted`), and whatever answer its worker had
  written before dying is wiped: it was interrupted, not answered, so it is not counted
  and its config is evaluated again;
- `claim_lock` serialises the short step where a worker picks its next config and marks it
  as taken, so two workers never pick the same one (a file lock beside a SQLite database, an
  advisory lock on PostgreSQL).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import optuna
from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled
from optuna.trial import FrozenTrial, TrialState

from search.errors import StorageError, first_line
from search.trial_kind import ANSWER_ATTRS, INTERRUPTED, is_interrupted

# Seconds between heartbeats, and silence after which another host's trial counts as dead.
HEARTBEAT_INTERVAL = 10
GRACE_PERIOD = 60

HOST = socket.gethostname()


def worker_id() -> dict:
    """This process as a worker: recorded on each trial it claims."""
    return {"worker_host": HOST, "worker_pid": os.getpid()}


def mark_interrupted(study: optuna.Study, trial_id: int) -> None:
    """Fail a trial cut short as interrupted. A worker writes a trial's answer attributes
    (a copy's source, a prune's evidence, a failure's reason) before it writes the state, so
    a kill between the two leaves them on a trial that answered nothing: they are wiped
    first (Optuna cannot delete an attribute, so they are set to None), then the state."""
    storage = study._storage
    with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
        attrs = storage.get_trial(trial_id).user_attrs
        for key in ANSWER_ATTRS:
            if attrs.get(key) is not None:
                storage.set_trial_user_attr(trial_id, key, None)
        storage.set_trial_user_attr(trial_id, INTERRUPTED, True)
        storage.set_trial_state_values(trial_id, state=TrialState.FAIL)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _dead_here(trial: FrozenTrial) -> bool:
    attrs = trial.user_attrs
    pid = attrs.get("worker_pid")
    if attrs.get("worker_host") != HOST or not isinstance(pid, int):
        return False
    return pid != os.getpid() and not _pid_alive(pid)


def recover_stale(study: optuna.Study) -> list[int]:
    """Fail the RUNNING trials of dead workers; return their numbers."""
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if not running:
        return []
    stale = {t._trial_id for t in running if _dead_here(t)}
    storage = study._storage
    if isinstance(storage, BaseHeartbeat) and is_heartbeat_enabled(storage):
        # other hosts: no heartbeat for GRACE_PERIOD (what optuna's fail_stale_trials reads;
        # a loaded study's storage is optuna's cache wrapper, which delegates heartbeats)
        stale.update(storage._get_stale_trial_ids(study._study_id))
    for trial_id in stale:
        mark_interrupted(study, trial_id)
    trials = study.get_trials(deepcopy=False)
    return [t.number for t in running if is_interrupted(trials[t.number])]


def running_elsewhere(study: optuna.Study) -> dict:
    """config key -> trial number, for trials under way (called between this worker's own
    trials, so they are other workers')."""
    out = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        key = t.user_attrs.get("config_key")
        if key is not None:
            out.setdefault(key, t.number)
    return out


class Heartbeat:
    """Records the trial's heartbeat now and every `interval` seconds until closed, from a
    thread, so a trial that runs for minutes in a child process still looks alive."""

    def __init__(self, study: optuna.Study, trial: optuna.Trial) -> None:
        self._storage = study._storage
        self._trial_id = trial._trial_id
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Heartbeat:
        storage = self._storage
        if not isinstance(storage, optuna.storages.RDBStorage):
            return self
        interval = storage.get_heartbeat_interval()
        if not interval:
            return self
        storage.record_heartbeat(self._trial_id)
        self._thread = threading.Thread(target=self._beat, args=(interval,), daemon=True)
        self._thread.start()
        return self

    def _beat(self, interval: float) -> None:
        while not self._stop.wait(interval):
            with contextlib.suppress(Exception):  # a storage hiccup must not end the trial
                self._storage.record_heartbeat(self._trial_id)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


@contextlib.contextmanager
def claim_lock(storage_url: str | None) -> Iterator[None]:
    """Mutual exclusion between the workers of one storage while they pick configs."""
    if storage_url is None:
        yield
    elif storage_url.startswith("sqlite:///"):
        path = Path(storage_url[len("sqlite:///") :] + ".lock")
        with open(path, "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
    elif storage_url.startswith("postgresql"):
        with _pg_advisory_lock(storage_url):
            yield
    else:  # MySQL and others: Optuna's own atomic pop of enqueued trials is the only guard
        yield


_ENGINES: dict[str, object] = {}


@contextlib.contextmanager
def _pg_advisory_lock(url: str) -> Iterator[None]:
    import sqlalchemy

    key = int.from_bytes(hashlib.sha256(b"qsearch-claim").digest()[:8], "big", signed=True)
    try:
        engine = _ENGINES.get(url)
        if engine is None:
            engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
            _ENGINES[url] = engine
        connection = engine.connect()
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy/psycopg2 raise many kinds here
        raise StorageError(f"--storage {url}: cannot connect: {first_line(exc)}") from None
    with connection:
        connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
        try:
            yield
        finally:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
