"""Opening the Optuna study that records a search: names, storage URLs and what it searched.

The study's user attributes hold the space (its TOML text and digest), the task and the fp32
accuracy, so a report or dashboard shows exactly what was run, and a later run can refuse to
mix a different space into the same study.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import optuna

from search.errors import StorageError, first_line
from search.liveness import GRACE_PERIOD, HEARTBEAT_INTERVAL, claim_lock
from search.space import SearchSpace

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
# qsearch records heartbeats itself around ask/tell (search.liveness), which Optuna warns about.
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
STUDIES_DIR = Path("studies")
METRICS = ["accuracy", "speedup"]
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def check_study_name(name: str) -> str:
    if not _NAME.match(name) or ".." in name:
        raise StorageError(
            f"--study must be 1-100 letters, digits, '.', '-' or '_' starting with a letter or "
            f"digit (it also names files), but got {name!r}"
        )
    return name


def default_storage(name: str, directory: Path = STUDIES_DIR) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{directory / name}.db"


def check_storage_url(url: str) -> str:
    """Refuse a malformed URL or a missing SQLite folder without touching anything."""
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///") :])
        if path.parent and not path.parent.exists():
            raise StorageError(
                f"--storage {url}: the folder `{path.parent}` must exist, but it does not"
            )
    elif not re.match(r"^(sqlite|postgresql|mysql)(\+\w+)?://", url):
        raise StorageError(
            f"--storage must be an Optuna RDB URL such as sqlite:///studies/NAME.db or "
            f"postgresql://user:pass@host/db, but got {url!r}"
        )
    return url


def make_storage(url: str) -> optuna.storages.BaseStorage:
    """An RDB storage; the URL is checked first so a typo is a message, not a traceback."""
    check_storage_url(url)
    try:
        return optuna.storages.RDBStorage(
            url,
            engine_kwargs=_engine_kwargs(url),
            heartbeat_interval=HEARTBEAT_INTERVAL,
            grace_period=GRACE_PERIOD,
        )
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy raises many kinds here
        raise StorageError(f"--storage {url}: cannot open the storage: {first_line(exc)}") from None


def _engine_kwargs(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 60}}
    return {}


def open_study(
    name: str,
    storage: str | None,
    space: SearchSpace,
    task_description: dict[str, Any],
    sampler: optuna.samplers.BaseSampler | None,
    strategy: str,
    allow_new_space: bool = False,
    objective: str = "throughput",
    threads: int = 1,
    unbound_digest: str | None = None,
) -> optuna.Study:
    """The study `name`, created or resumed. `unbound_digest`: the digest of `space` before
    the strategy added dimensions to it (the fallback's groups), so a search of that space
    (a static beam) can be continued by the strategy in the same study."""
    check_study_name(name)
    url = check_storage_url(storage or default_storage(name))
    with claim_lock(url):  # workers started together create the schema and attributes once
        study = _open_study(
            name,
            url,
            space,
            task_description,
            sampler,
            strategy,
            allow_new_space,
            objective,
            unbound_digest,
        )
        check_same_measurement(study, url, task_description, threads)
        return study


# What a study's speedups and metric were measured at: resuming with another value would mix
# two measurements in one frontier (`task` attribute keys, as TextClassificationTask.describe
# writes them, with the option that sets each).
MEASURED_AT = {
    "batch_size": "--batch-size",
    "latency_batch_size": "--batch-size",
    "max_length": "--max-length",
    "padding": "--padding",
    "metric": "--metric",
    "output": "--output",
    "pooling": "--pooling",
}


def check_same_measurement(
    study: optuna.Study, url: str, task_description: dict[str, Any], threads: int
) -> None:
    """Refuse to resume a study at another serving shape, output, metric or thread count
    than its trials were measured at (an older study without the record is let through)."""
    stored = study.user_attrs.get("task") or {}
    changes = [
        f"{option} {stored[key]!r} (now {task_description.get(key)!r})"
        for key, option in MEASURED_AT.items()
        if key in stored and stored[key] != task_description.get(key)
    ]
    before = (study.user_attrs.get("settings") or {}).get("threads")
    before = [before] if isinstance(before, int) else before
    if before is not None and list(before) != [threads]:
        changes.append(f"--threads {','.join(map(str, before))} (now {threads})")
    if changes:
        raise StorageError(
            f"study {study.study_name!r} in {url} was measured at "
            f"{'; '.join(dict.fromkeys(changes))}: its trials would not compare with new "
            f"ones; use another --study name, or run it with the same options"
        )


def _open_study(
    name: str,
    url: str,
    space: SearchSpace,
    task_description: dict[str, Any],
    sampler: optuna.samplers.BaseSampler | None,
    strategy: str,
    allow_new_space: bool,
    objective: str,
    unbound_digest: str | None = None,
) -> optuna.Study:
    study = optuna.create_study(
        study_name=name,
        storage=make_storage(url),
        directions=["maximize", "maximize"],
        sampler=sampler,
        load_if_exists=True,
    )
    attrs = study.user_attrs
    if attrs.get("objective", objective) != objective and not allow_new_space:
        raise StorageError(
            f"study {name!r} in {url} measures {attrs['objective']} speed, not {objective}; "
            f"use another --study name"
        )
    same_space = attrs.get("space_digest") in (space.digest, unbound_digest)
    if "space_digest" in attrs and not same_space and not allow_new_space:
        raise StorageError(
            f"study {name!r} in {url} was searched with space {attrs.get('space_name')!r} "
            f"({attrs.get('space_source')}), which differs from {space.source}; use another "
            f"--study name, or --continue-with-new-space to mix them"
        )
    model = attrs.get("task", {}).get("model_sha256")
    if model and model != task_description.get("model_sha256") and not allow_new_space:
        raise StorageError(
            f"study {name!r} in {url} was searched on a different model "
            f"({attrs['task'].get('model')}); use another --study name"
        )
    if not attrs:
        speed = METRICS[1] if objective == "throughput" else "latency_speedup"
        study.set_metric_names([task_description.get("metric", METRICS[0]), speed])
        study.set_user_attr("objective", objective)
        study.set_user_attr("space_name", space.name)
        study.set_user_attr("space_source", space.source)
        study.set_user_attr("space_digest", space.digest)
        study.set_user_attr("space_text", space.text)
        study.set_user_attr("task", task_description)
        study.set_user_attr("strategy", strategy)
    return study


def _default_storage_of(name: str) -> str:
    """Where a study is found without --storage: studies/<name>.db, or for one count of a
    multi-count run (`<base>-t<n>`) its run's studies/<base>.db."""
    url = default_storage(name)
    base, _, count = name.rpartition("-t")
    if not Path(url[len("sqlite:///") :]).exists() and base and count.isdigit():
        shared = default_storage(base)
        if Path(shared[len("sqlite:///") :]).exists():
            return shared
    return url


def load_thread_group(name: str, storage: str | None) -> list[optuna.Study]:
    """The studies of a run at several thread counts named `name` (`<name>-t<n>`, in the
    order run), or [] when `name` is not such a run (or is itself a study)."""
    check_study_name(name)
    url = storage or default_storage(name)
    if storage is None and not Path(url[len("sqlite:///") :]).exists():
        return []
    storage = make_storage(url)
    names = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    if name in names:
        return []
    members = [n for n in names if n.startswith(f"{name}-t") and n[len(name) + 2 :].isdigit()]
    studies = [optuna.load_study(study_name=n, storage=storage) for n in members]
    ordered = [s for s in studies if (s.user_attrs.get("thread_group") or {}).get("base") == name]
    if not ordered:
        return []
    order = ordered[0].user_attrs["thread_group"]["studies"]
    return sorted(ordered, key=lambda s: order.index(s.study_name) if s.study_name in order else 99)


def load_study(name: str, storage: str | None) -> optuna.Study:
    """An existing study, for reports and `show`."""
    check_study_name(name)
    url = storage or _default_storage_of(name)
    if storage is None and not Path(url[len("sqlite:///") :]).exists():
        existing = ", ".join(sorted(p.stem for p in STUDIES_DIR.glob("*.db"))) or "none"
        raise StorageError(
            f"study {name!r} must exist, but {url[len('sqlite:///') :]} does not "
            f"(studies in {STUDIES_DIR}/: {existing})"
        )
    try:
        return optuna.load_study(study_name=name, storage=make_storage(url))
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(url)]
        raise StorageError(
            f"study {name!r} must exist in {url}, but the storage holds {names or 'no studies'}"
        ) from None
