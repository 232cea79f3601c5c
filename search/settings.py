"""What `qsearch run` was asked, as one frozen, validated object, and how a study's stored
settings are read back (its accepted drop, its task), so every command answers "what are the
run's settings?" the same way.

`RunSettings` is checked before any work; study files (`search.study_file`) and `run --help`
derive their keys, types and defaults from its fields.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import optuna

from search.errors import QsearchError
from search.isolation import DEFAULT_TIME_LIMIT
from search.measure import OBJECTIVES
from search.metrics import METRICS
from search.study import check_study_name
from search.tasks.base import TextClassificationTask
from search.tasks.custom import DataSettings, build_task
from search.tasks.default import default_task, load_task_dir
from search.tasks.outputs import check_serving_shape

DEFAULT_BUDGET = {"beam": 60, "sampler": 20}


def _setting(default, section: str = "", key: str | None = None):
    """A RunSettings field a study file may hold: `key` (default: the field's name) in
    `[section]`, or at the top level when `section` is "". Fields made without it are
    command-line only."""
    return field(default=default, metadata={"section": section, "key": key})


@dataclass(frozen=True)
class RunSettings:
    """What `qsearch run` was asked. The one place the settings are declared: the study-file
    schema (`search/study_file.py`: sections, keys, types) and the defaults `qsearch run
    --help` shows are read from these fields."""

    space: str = _setting("default", "search")
    beam: int | None = _setting(None, "search")
    sampler: str | None = _setting(None, "search")
    fallback: bool = _setting(False, "search")
    trials: int | None = _setting(None, "search")
    timeout: float | None = _setting(None, "search")
    study: str | None = _setting(None, key="name")
    storage: str | None = _setting(None, "search")
    max_drop: float = _setting(0.01, "search")
    prune_drop: float = _setting(0.05, "search")
    timing_seconds: float = _setting(12.0, "measure")
    timing_target: float = _setting(0.02, "measure")
    # Timing budget of each confirmation; None: 3x --timing-seconds. Measured here
    # (benchmarks/measurement_stability.py): 12 s gives a speedup CV of 2.5% across repeats,
    # 36 s 1.5%.
    confirm_seconds: float | None = _setting(None, "measure")
    objective: str = _setting("throughput", "measure")
    # onnxruntime intra-op threads of every timed session. Several counts: one search (one
    # study, `<study>-t<n>`) per count, each count's frontier measured at that count.
    threads: tuple[int, ...] = _setting((1,), "measure")
    # The serving shape: examples per batch (None: 32 for throughput, 1 for latency), tokens
    # per example, and padding to the longest in each batch or to max_length.
    batch_size: int | None = _setting(None, "measure")
    max_length: int = _setting(128, "measure")
    padding: str = _setting("longest", "measure")
    presets: bool = _setting(True, "search")
    seeds: bool = _setting(True, "search")
    # The beam puts off a one-dimension move that lost every one of 3+ tries, clearly taken
    # together (`BeamSearch.deferred`); off, it tries every move every round, as before.
    defer_moves: bool = _setting(True, "search")
    # The beam stops when a round changed its kept set only by ties (`search.strategies.beam.
    # only_ties`); off, any change of the kept set is another round, as before.
    settle_ties: bool = _setting(True, "search")
    confirm: bool = _setting(True, "search")
    report: bool = True
    task_dir: Path | None = _setting(None, "model")
    seed: int = _setting(0, "search")
    continue_with_new_space: bool = False
    isolate: bool = _setting(True, "search")
    trial_time_limit: float = _setting(DEFAULT_TIME_LIMIT, "search")
    # your own model and data (both, or neither for the embedded default task)
    model: Path | None = _setting(None, "model", key="path")
    tokenizer: Path | None = _setting(None, "model")
    data: Path | None = _setting(None, "data", key="path")
    text_column: str | None = _setting(None, "data")
    text_pair_column: str | None = _setting(None, "data")
    label_column: str | None = _setting(None, "data")
    split: str | None = _setting(None, "data")
    eval_size: int = _setting(1000, "data")
    calibration_size: int = _setting(256, "data")
    metric: str | None = _setting(None, "data")
    # The output the metric reads (None: logits, else the first [batch, features] output,
    # else the sequence output pooled) and how a sequence output is pooled (None: mean).
    output: str | None = _setting(None, "model")
    pooling: str | None = _setting(None, "model")

    def __post_init__(self) -> None:
        if self.trials is not None and self.trials < 1:
            raise QsearchError(f"--trials must be at least 1, but got {self.trials}")
        if self.timeout is not None and self.timeout <= 0:
            raise QsearchError(
                f"--timeout must be a positive number of seconds, but got {self.timeout}"
            )
        if not 0 <= self.max_drop < 1:
            raise QsearchError(f"--max-drop must be a fraction in [0, 1), but got {self.max_drop}")
        if not self.max_drop <= self.prune_drop <= 1:
            raise QsearchError(
                f"--prune-drop must be a fraction in [--max-drop, 1] (a config the search "
                f"accepts is never pruned; 1 turns pruning off), but got {self.prune_drop}"
            )
        if self.confirm_seconds is not None and self.confirm_seconds <= 0:
            raise QsearchError(
                f"--confirm-seconds must be positive, but got {self.confirm_seconds}"
            )
        if self.timing_seconds <= 0:
            raise QsearchError(f"--timing-seconds must be positive, but got {self.timing_seconds}")
        if self.objective not in OBJECTIVES:
            raise QsearchError(
                f"--objective must be one of {', '.join(OBJECTIVES)}, but got {self.objective!r}"
            )
        if not 0 < self.timing_target < 1:
            raise QsearchError(
                f"--timing-target must be a fraction in (0, 1), but got {self.timing_target}"
            )
        if self.trial_time_limit <= 0:
            raise QsearchError(
                f"--trial-time-limit must be a positive number of seconds, but got "
                f"{self.trial_time_limit}"
            )
        object.__setattr__(self, "threads", parse_threads(self.threads))
        check_serving_shape(self.batch_size, self.max_length, self.padding, self.pooling)
        if self.study is not None:
            check_study_name(self.study)
        if (self.model is None) != (self.data is None):
            raise QsearchError(
                "--model and --data go together: give both to search your own model, or "
                "neither for the embedded default task"
            )
        if self.task_dir is not None and self.model is not None:
            raise QsearchError("use either --task-dir or --model/--data, not both")
        if self.metric is not None and self.metric not in METRICS:
            raise QsearchError(
                f"--metric must be one of {', '.join(METRICS)}, but got {self.metric!r}"
            )

    def to_dict(self) -> dict:
        """The resolved settings, stored in the study so a report shows what was run."""
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}

    @property
    def budget(self) -> int:
        return self.trials or DEFAULT_BUDGET["beam" if self.sampler is None else "sampler"]

    @property
    def thread_count(self) -> int:
        """The one thread count of a search (`per_thread_count` splits a run of several)."""
        if len(self.threads) != 1:
            raise QsearchError(
                f"one search times at one thread count; split --threads "
                f"{','.join(map(str, self.threads))} with per_thread_count()"
            )
        return self.threads[0]

    def per_thread_count(self) -> list[RunSettings]:
        """One search's settings per thread count, in the order given: the best config can
        change with the count, so each count gets its own frontier (and study)."""
        if len(self.threads) == 1:
            return [self]
        return [replace(self, threads=(t,)) for t in self.threads]


def parse_threads(value) -> tuple[int, ...]:
    """Thread counts from an int, a list of ints (study files, stored settings) or "1,2"
    (the command line): distinct, each at least 1, in the order given."""
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",")]
        counts = [int(p) if p.isdigit() else p for p in parts]
    elif isinstance(value, int) and not isinstance(value, bool):
        counts = [value]
    elif isinstance(value, list | tuple):
        counts = list(value)
    else:
        counts = [value]
    good = all(isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in counts)
    if not counts or not good or len(set(counts)) != len(counts):
        raise QsearchError(
            f"--threads must be one thread count or several distinct ones separated by "
            f"commas, each at least 1 (e.g. 1 or 1,2), but got {value!r}"
        )
    return tuple(counts)


def load_task(settings: RunSettings, progress=None) -> TextClassificationTask:
    """The user's model and data, a prepared task folder, or the embedded default, checked
    (`TextClassificationTask.check`): a task that cannot be searched is one `TaskError`
    before any study or trial exists."""
    task = _load_task(settings, progress)
    task.check()
    return task


def task_options(settings: RunSettings) -> dict:
    """The task fields the settings decide: serving shape and the output the metric reads.
    Without --batch-size, throughput runs batches of 32 and latency single examples."""
    options = {
        "max_length": settings.max_length,
        "padding": settings.padding,
        "output": settings.output,
        "pooling": settings.pooling,
    }
    if settings.batch_size is not None:
        options["batch_size"] = options["latency_batch_size"] = settings.batch_size
    return options


def _load_task(settings: RunSettings, progress=None) -> TextClassificationTask:
    if settings.model is not None:
        data = DataSettings(
            path=settings.data,
            text_column=settings.text_column,
            text_pair_column=settings.text_pair_column,
            label_column=settings.label_column,
            split=settings.split,
            eval_size=settings.eval_size,
            calibration_size=settings.calibration_size,
            seed=settings.seed,
        )
        return build_task(
            settings.model, data, settings.tokenizer, settings.metric, **task_options(settings)
        )
    task_dir = settings.task_dir
    if task_dir is None:
        return default_task(progress=progress, **_metric(settings), **task_options(settings))
    task_dir = Path(task_dir)
    if not (task_dir / "model.onnx").exists() or not (task_dir / "eval.json").exists():
        raise QsearchError(
            f"--task-dir `{task_dir}` must be a prepared task folder holding model.onnx, a "
            f"tokenizer, eval.json and calibration.json, but it does not"
        )
    return load_task_dir(
        task_dir, name=task_dir.name, **_metric(settings), **task_options(settings)
    )


def _metric(settings: RunSettings) -> dict:
    return {"metric": settings.metric} if settings.metric else {}


def study_max_drop(study: optuna.Study, given: float | None = None) -> float:
    """The accepted drop from fp32 that reading a study uses (`show`, `report`, `export
    --best`): `given` when the command was given --max-drop, else the one the study was run
    with (the last run's stored settings), else RunSettings' default (an older study)."""
    if given is not None:
        if not 0 <= given <= 1:  # reading may accept anything (1); a search may not
            raise QsearchError(f"--max-drop must be a fraction in [0, 1], but got {given}")
        return given
    stored = study.user_attrs.get("settings") or {}
    return stored.get("max_drop", RunSettings.max_drop)


def task_for_study(study: optuna.Study) -> TextClassificationTask:
    """Rebuild the task a study was searched on, from the settings stored with it."""
    stored = study.user_attrs.get("settings")
    if stored is None:
        raise QsearchError(
            f"study {study.study_name!r} does not record its settings (made by an older "
            f"qsearch); run it again with this version to record them"
        )
    known = {f for f in RunSettings.__dataclass_fields__}
    values = {k: v for k, v in stored.items() if k in known}
    for key in ("model", "tokenizer", "data", "task_dir"):
        if values.get(key) is not None:
            values[key] = Path(values[key])
    return load_task(RunSettings(**values))
