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
from search.confirm import complete_frontier, confirm_frontier
from search.early import PruneSettings
from search.isolation import IsolatedEvaluator
from search.liveness import claim_lock, running_elsewhere
from search.measure import TimingSettings
from search.note import save_frontier_note
from search.objective import Evaluator
from search.ranking import within_drop
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


def group_study_name(base: str, threads: int) -> str:
    """The study of one thread count of a multi-count run."""
    return f"{base}-t{threads}"


@dataclass
class Search:
    settings: RunSettings
    space: SearchSpace
    strategy: Strategy
    task: TextClassificationTask
    study: optuna.Study
    storage_url: str
    # Configs to try first besides this CPU's recipes: another thread count's frontier.
    carried: dict[str, QuantConfig] = field(default_factory=dict)
    evaluator: Evaluator | IsolatedEvaluator = field(init=False)

    def __post_init__(self) -> None:
        timing = TimingSettings(
            seconds=self.settings.timing_seconds,
            target=self.settings.timing_target,
            threads=self.settings.thread_count,
            objective=self.settings.objective,
        )
        prune = PruneSettings(drop=self.settings.prune_drop, max_drop=self.settings.max_drop)
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
        carried: dict[str, QuantConfig] | None = None,
        thread_group: tuple[int, ...] | None = None,
    ) -> Search:
        """Check every input, cheapest first, then load the task (`before_task` announces a
        build that takes minutes, once nothing else can fail first) and open the study.

        One of several thread counts (`thread_group`, split by `RunSettings.per_thread_count`)
        is the study `<name>-t<threads>`, in the same storage as the other counts' studies;
        `carried` configs are tried first (`seeds`)."""
        space = load_space(settings.space)
        strategy = make_strategy(
            settings.beam,
            settings.sampler,
            seed=settings.seed,
            max_drop=settings.max_drop,
            fallback=settings.fallback,
            defer_moves=settings.defer_moves,
            settle_ties=settings.settle_ties,
        )
        if settings.storage is not None:
            check_storage_url(settings.storage)  # refused before the task is built
        if before_task:
            before_task()
        task = load_task(settings, task_progress)
        structure = model_structure(task.model_path)
        searched = space.resolve(task.operators, structure=structure)
        space = strategy.bind(searched, structure)
        base = check_study_name(settings.study or f"{task.name}-{space.name}-{strategy.name}")
        name = group_study_name(base, settings.thread_count) if thread_group else base
        check_study_name(name)
        url = settings.storage or default_storage(base)
        study = open_study(
            name,
            url,
            space,
            task.describe(),
            strategy.sampler(),
            strategy.name,
            allow_new_space=settings.continue_with_new_space,
            objective=settings.objective,
            threads=settings.thread_count,
            unbound_digest=searched.digest,
        )
        study.set_user_attr("settings", settings.to_dict())
        study.set_user_attr("metric", task.metric)
        if thread_group:
            group = [group_study_name(base, t) for t in thread_group]
            study.set_user_attr("thread_group", {"base": base, "studies": group})
        return cls(settings, space, strategy, task, study, url, dict(carried or {}))

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
        """The seed recipes for this worker's CPU that the space holds (`search.seeds`; unless
        --no-seeds), then the configs carried from another thread count's frontier."""
        seeds = {}
        if self.settings.seeds:
            seeds = seeds_for(worker_info(self.settings.thread_count)["isa"], self.space)
        known = {c.key for c in seeds.values()}
        for label, config in self.carried.items():
            if config.key not in known and self.space.contains(config):
                seeds[label] = config
                known.add(config.key)
        return seeds

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
            seeds = self.seeds()
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
            elif summary.stopped_because != "interrupted":
                complete_frontier(self.study, self.evaluator, on_stage)
                if self.settings.confirm:
                    confirm_frontier(
                        self.study,
                        self.evaluator,
                        on_round=on_stage,
                        seconds=self.settings.confirm_seconds or 3 * self.settings.timing_seconds,
                    )
                    complete_frontier(self.study, self.evaluator, on_stage)  # pooled speeds
            save_frontier_note(self.study, self.settings.max_drop)
            return summary
        finally:
            self.evaluator.close()

    def lock(self):
        """The claim lock shared by every worker of this study's storage."""
        return claim_lock(self.storage_url)

    def evaluated(self) -> int:
        return evaluated_count(self.study)

    def frontier_configs(self, limit: int = 4) -> dict[str, QuantConfig]:
        """The fastest frontier configs within --max-drop (at most `limit`), labelled, to
        carry into the search at the next thread count."""
        from search.results import pareto_rows

        rows = pareto_rows(self.study)
        if rows.empty:
            return {}
        fp32 = self.study.user_attrs["fp32_accuracy"]
        rows = rows[within_drop(rows["accuracy"], fp32, self.settings.max_drop)].head(limit)
        threads = self.settings.thread_count
        return {
            f"frontier at {threads} thread(s), trial {int(r.trial)}": QuantConfig.from_dict(
                self.study.trials[int(r.trial)].user_attrs["config"]
            )
            for r in rows.itertuples()
        }

    def write_report(self) -> Path:
        return write_report(
            self.study, Path("reports") / f"{self.name}.html", self.settings.max_drop
        )
