"""A whole search as one object: settings checked, inputs bound, then run and reported.

`RunSettings` (search/settings.py) is what `qsearch run` was asked, and `Search.prepare`
checks every input (space, strategy, study name, task, storage) before the study is written,
so bad input leaves nothing behind. The CLI only parses and displays.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna

from search.config import QuantConfig, optimum_dynamic_presets
from search.confirm import confirm_frontier
from search.early import PruneSettings
from search.isolation import IsolatedEvaluator
from search.liveness import claim_lock, running_elsewhere
from search.measure import TimingSettings
from search.note import save_frontier_note
from search.objective import Evaluator
from search.report import write_report
from search.runner import RunSummary, evaluate_references, evaluated_count, run_search
from search.seeds import seeds_for
from search.settings import RunSettings, load_task
from search.space import SearchSpace, load_space
from search.strategies import make_strategy
from search.strategies.base import Strategy
from search.strategies.seeded import SeedStrategy
from search.structure import model_structure
from search.study import check_storage_url, check_study_name, default_storage, open_study
from search.tasks.base import TextClassificationTask
from search.worker import worker_info


@dataclass
class Search:
    settings: RunSettings
    space: SearchSpace
    strategy: Strategy
    task: TextClassificationTask
    study: optuna.Study
    storage_url: str
    evaluator: Evaluator | IsolatedEvaluator = field(init=False)

    def __post_init__(self) -> None:
        timing = TimingSettings(
            seconds=self.settings.timing_seconds,
            target=self.settings.timing_target,
            threads=self.settings.threads,
            objective=self.settings.objective,
        )
        prune = PruneSettings(drop=self.settings.prune_drop)
        if self.settings.isolate:
            self.evaluator = IsolatedEvaluator(
                self.task, timing, self.settings.trial_time_limit, prune=prune
            )
        else:
            self.evaluator = Evaluator(self.task, timing, prune=prune)
        if "fp32_accuracy" not in self.study.user_attrs:
            self.study.set_user_attr("fp32_accuracy", self.evaluator.fp32_accuracy)

    @classmethod
    def prepare(
        cls,
        settings: RunSettings,
        task_progress=None,
        before_task: Callable[[], None] | None = None,
    ) -> Search:
        """Check every input, cheapest first, then load the task (`before_task` announces a
        build that takes minutes, once nothing else can fail first) and open the study."""
        space = load_space(settings.space)
        strategy = make_strategy(
            settings.beam,
            settings.sampler,
            seed=settings.seed,
            max_drop=settings.max_drop,
            fallback=settings.fallback,
        )
        if settings.storage is not None:
            check_storage_url(settings.storage)  # refused before the task is built
        if before_task:
            before_task()
        task = load_task(settings, task_progress)
        structure = model_structure(task.model_path)
        space = strategy.bind(space.resolve(task.operators, structure=structure), structure)
        name = check_study_name(settings.study or f"{task.name}-{space.name}-{strategy.name}")
        study = open_study(
            name,
            settings.storage,
            space,
            task.describe(),
            strategy.sampler(),
            strategy.name,
            allow_new_space=settings.continue_with_new_space,
            objective=settings.objective,
        )
        study.set_user_attr("settings", settings.to_dict())
        study.set_user_attr("metric", task.metric)
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

    def seeds(self) -> dict[str, QuantConfig]:
        """The seed recipes for this worker's CPU that the space holds (`search.seeds`)."""
        return seeds_for(worker_info(self.settings.threads)["isa"], self.space)

    def run(
        self,
        on_trial: Callable[[optuna.Study, str], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        on_stage: Callable[[str], None] | None = None,
    ) -> RunSummary:
        started = time.monotonic()

        def search(strategy: Strategy) -> RunSummary:
            # one --timeout for the whole run: the seed phase's time counts against it
            timeout = self.settings.timeout
            if timeout is not None:
                timeout = max(timeout - (time.monotonic() - started), 1e-3)
            return run_search(
                self.study,
                self.space,
                strategy,
                self.evaluator,
                self.settings.budget,
                timeout,
                on_trial,
                should_stop=should_stop,
                lock=self.lock,
            )

        try:
            seeded = RunSummary()
            seeds = self.seeds() if self.settings.seeds else {}
            if seeds:  # first: the known-good recipes, a good answer within a minute
                if on_stage:
                    on_stage("seed recipes")
                seeded = search(SeedStrategy(seeds))
                if seeded.stopped_because == "interrupted":
                    return seeded
            if self.settings.presets:
                if on_stage:
                    on_stage("Optimum presets")
                evaluate_references(
                    self.study, self.presets(), self.evaluator, on_trial, lock=self.lock
                )
            if on_stage:
                on_stage("trials")
            self.strategy.prepare(self.study, self.space, self.task)  # fallback: sensitivity
            summary = search(self.strategy)
            summary.evaluated += seeded.evaluated  # this run's trials, seeds included
            summary.failed += seeded.failed
            summary.duplicates += seeded.duplicates
            if running_elsewhere(self.study):
                summary.stopped_because += "; other workers are still running trials, the last "
                summary.stopped_because += "one to finish confirms the frontier"
            elif self.settings.confirm and summary.stopped_because != "interrupted":
                confirm_frontier(
                    self.study,
                    self.evaluator,
                    on_round=on_stage,
                    seconds=self.settings.confirm_seconds or 3 * self.settings.timing_seconds,
                )
            save_frontier_note(self.study, self.settings.max_drop)
            return summary
        finally:
            self.evaluator.close()

    def lock(self):
        """The claim lock shared by every worker of this study's storage."""
        return claim_lock(self.storage_url)

    def evaluated(self) -> int:
        return evaluated_count(self.study)

    def write_report(self) -> Path:
        return write_report(
            self.study, Path("reports") / f"{self.name}.html", self.settings.max_drop
        )
