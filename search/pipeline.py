"""A whole search as one object: settings checked, inputs bound, then run and reported.

`RunSettings` is what `qsearch run` was asked (frozen, validated before any work), and
`Search.prepare` checks every input (space, strategy, study name, task, storage) before the
study is written, so bad input leaves nothing behind. The CLI only parses and displays.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna

from search.config import optimum_dynamic_presets
from search.errors import QsearchError
from search.measure import TimingSettings
from search.objective import Evaluator
from search.report import write_report
from search.runner import RunSummary, evaluate_references, evaluated_count, run_search
from search.space import SearchSpace, load_space
from search.strategies import make_strategy
from search.strategies.base import Strategy
from search.study import check_storage_url, check_study_name, default_storage, open_study
from search.tasks.base import TextClassificationTask
from search.tasks.default import default_task, load_task_dir

DEFAULT_BUDGET = {"beam": 60, "sampler": 20}


@dataclass(frozen=True)
class RunSettings:
    space: str = "default"
    beam: int | None = None
    sampler: str | None = None
    trials: int | None = None
    timeout: float | None = None
    study: str | None = None
    storage: str | None = None
    max_drop: float = 0.01
    timing_seconds: float = 6.0
    threads: int = 1
    presets: bool = True
    report: bool = True
    task_dir: Path | None = None
    seed: int = 0
    continue_with_new_space: bool = False

    def __post_init__(self) -> None:
        if self.trials is not None and self.trials < 1:
            raise QsearchError(f"--trials must be at least 1, but got {self.trials}")
        if self.timeout is not None and self.timeout <= 0:
            raise QsearchError(
                f"--timeout must be a positive number of seconds, but got {self.timeout}"
            )
        if not 0 <= self.max_drop < 1:
            raise QsearchError(f"--max-drop must be a fraction in [0, 1), but got {self.max_drop}")
        if self.timing_seconds <= 0:
            raise QsearchError(f"--timing-seconds must be positive, but got {self.timing_seconds}")
        if self.threads < 1:
            raise QsearchError(f"--threads must be at least 1, but got {self.threads}")
        if self.study is not None:
            check_study_name(self.study)

    @property
    def budget(self) -> int:
        return self.trials or DEFAULT_BUDGET["beam" if self.sampler is None else "sampler"]


def load_task(task_dir: Path | None, progress=None) -> TextClassificationTask:
    """A prepared task folder, or the embedded default (built on first use)."""
    if task_dir is None:
        return default_task(progress=progress)
    task_dir = Path(task_dir)
    if not (task_dir / "model.onnx").exists() or not (task_dir / "eval.json").exists():
        raise QsearchError(
            f"--task-dir `{task_dir}` must be a prepared task folder holding model.onnx, a "
            f"tokenizer, eval.json and calibration.json, but it does not"
        )
    return load_task_dir(task_dir, name=task_dir.name)


@dataclass
class Search:
    settings: RunSettings
    space: SearchSpace
    strategy: Strategy
    task: TextClassificationTask
    study: optuna.Study
    storage_url: str
    evaluator: Evaluator = field(init=False)

    def __post_init__(self) -> None:
        self.evaluator = Evaluator(
            self.task,
            TimingSettings(seconds=self.settings.timing_seconds, threads=self.settings.threads),
        )
        if "fp32_accuracy" not in self.study.user_attrs:
            self.study.set_user_attr("fp32_accuracy", self.evaluator.fp32_accuracy)

    @classmethod
    def prepare(cls, settings: RunSettings, task_progress=None) -> Search:
        space = load_space(settings.space)
        strategy = make_strategy(
            settings.beam, settings.sampler, seed=settings.seed, max_drop=settings.max_drop
        )
        if settings.storage is not None:
            check_storage_url(settings.storage)  # refused before the task is built
        task = load_task(settings.task_dir, task_progress)
        space = space.resolve(task.operators)
        name = check_study_name(settings.study or f"{task.name}-{space.name}-{strategy.name}")
        study = open_study(
            name,
            settings.storage,
            space,
            task.describe(),
            strategy.sampler(),
            strategy.name,
            allow_new_space=settings.continue_with_new_space,
        )
        url = settings.storage or default_storage(name)
        return cls(settings, space, strategy, task, study, url)

    @property
    def name(self) -> str:
        return self.study.study_name

    def presets(self) -> dict:
        """Optimum's dynamic presets, restricted to operators the model has (same model)."""
        out = {}
        for label, config in optimum_dynamic_presets().items():
            ops = [op for op in config.operators if op in self.task.operators]
            if ops:
                out[label] = config.replace(operators=ops)
        return out

    def run(
        self,
        on_trial: Callable[[optuna.Study, str], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        on_stage: Callable[[str], None] | None = None,
    ) -> RunSummary:
        try:
            if self.settings.presets:
                if on_stage:
                    on_stage("Optimum presets")
                evaluate_references(self.study, self.presets(), self.evaluator, on_trial)
            if on_stage:
                on_stage("trials")
            return run_search(
                self.study,
                self.space,
                self.strategy,
                self.evaluator,
                self.settings.budget,
                self.settings.timeout,
                on_trial,
                should_stop=should_stop,
            )
        finally:
            self.evaluator.close()

    def evaluated(self) -> int:
        return evaluated_count(self.study)

    def write_report(self) -> Path:
        return write_report(
            self.study, Path("reports") / f"{self.name}.html", self.settings.max_drop
        )
