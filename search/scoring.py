"""A candidate's metric: scored slice by slice against fp32's outputs, stopped as soon as the
evidence says the config cannot reach the prune threshold (`search.early`).

Kept apart from the trial (`search.objective`) because scoring and timing share nothing but
the session: scoring is untimed, so it runs on every core, holds fp32's outputs on the
evaluation set (computed once per run), and decides pruning; timing owns the fp32 reference
session and the budget.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from search.config import make_session_options
from search.early import PruneSettings, drop_range, look_evidence, per_example_hits
from search.errors import QsearchError, TaskError, TrialError, TrialPruned, failure_reason
from search.measure import make_session
from search.metrics import LABEL_METRICS
from search.stats import paired_accuracy_difference
from search.tasks.base import TextClassificationTask


@dataclass
class Progress:
    """One candidate's scoring so far: the outputs of the slices done, the looks taken, what
    they cost, and, where it stopped early, why."""

    session: Any
    attrs: dict
    slices: int
    total: int
    rows: list[np.ndarray] = field(default_factory=list)
    looks: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    metric: float | None = None  # on every example, once they are all seen
    stopped: dict | None = None

    @property
    def done(self) -> int:
        return len(self.rows)

    @property
    def complete(self) -> bool:
        return self.done == self.slices

    @property
    def seen(self) -> int:
        return sum(len(r) for r in self.rows)

    def rest_seconds(self) -> float:
        """What the examples not seen yet should cost, at the rate of those seen."""
        if not self.seen:
            return math.inf
        return self.seconds / self.seen * (self.total - self.seen)


class Scorer:
    """The evaluation set's reference (fp32's outputs and metric) and the pruned scoring of
    candidates against it."""

    def __init__(
        self,
        task: TextClassificationTask,
        prune: PruneSettings | None = None,
        threads: int | None = None,
    ) -> None:
        self.task = task
        self.prune = prune or PruneSettings()
        # Scoring is not timed, so it may use every core: the metric on 1,000 sentences is
        # the largest phase of a trial at one thread.
        self.threads = threads or os.cpu_count() or 1
        self._fp32_outputs: np.ndarray | None = None

    @property
    def fp32_outputs(self) -> np.ndarray:
        """fp32's outputs on the evaluation set, once: the reference of fidelity metrics."""
        if self._fp32_outputs is None:
            try:
                session = make_session(
                    self.task.model_path, make_session_options(threads=self.threads)
                )
                self._fp32_outputs = self.task.outputs(session)
            except QsearchError:
                raise
            except Exception as exc:  # noqa: BLE001 - the user's model, before any trial
                raise TaskError(
                    "the fp32 model must run on the evaluation data, but it failed: "
                    f"{failure_reason(exc)}"
                ) from None
        return self._fp32_outputs

    @property
    def fp32_accuracy(self) -> float:
        """fp32's score on the task's metric (1.0 for fidelity metrics, by definition)."""
        return self.task.score(self.fp32_outputs, self.fp32_outputs)

    @property
    def prune_threshold(self) -> float:
        """The metric below which a config is pruned: fp32's minus the prune drop."""
        return self.fp32_accuracy - self.prune.drop

    def accuracy_difference(self, outputs: np.ndarray) -> dict:
        """Paired difference from fp32 on the same examples (label metrics only)."""
        refs = self.task.eval_references
        if self.task.metric not in LABEL_METRICS or refs is None:
            return {}
        n = len(outputs)  # fewer than every example where the scoring stopped early
        d = paired_accuracy_difference(
            outputs.argmax(-1) == refs[:n], self.fp32_outputs[:n].argmax(-1) == refs[:n]
        )
        return {
            "accuracy_diff": d.diff,
            "accuracy_diff_low": d.low,
            "accuracy_diff_high": d.high,
            "mcnemar_p": d.mcnemar_p,
            "discordant_examples": d.discordant,
        }

    def score(self, session, attrs: dict) -> tuple[np.ndarray, float, list[dict]]:
        """The metric on every example, slice by slice (`task.eval_slices`), pruning as soon
        as the bound allows; returns (outputs, metric, the looks' evidence). Raises
        `TrialPruned` (with `attrs`) or `TrialError`."""
        progress = self.begin(session, attrs)
        self.advance(progress)
        return self.result(progress)

    def begin(self, session, attrs: dict) -> Progress:
        """A candidate's scoring, not started: `advance` scores it a slice at a time."""
        slices = self.task.eval_slices
        return Progress(session, attrs, len(slices), sum(len(b) for part in slices for b in part))

    def advance(
        self,
        progress: Progress,
        until: int | None = None,
        stop: Callable[[dict], dict | None] | None = None,
    ) -> None:
        """Score slices until `until` of them are done (all by default), pruning a hopeless
        config (`TrialPruned`). After each interim look, `stop` (given the look's evidence)
        may end the scoring early, returning why: a config the frontier dominates at its
        metric's ceiling needs no more examples (`search.objective`)."""
        slices = self.task.eval_slices
        until = len(slices) if until is None else min(until, len(slices))
        alpha_look = self.prune.alpha / max(1, len(slices) - 1)
        threshold = self.prune_threshold
        if stop is not None and progress.looks and not progress.complete:
            progress.stopped = stop(progress.looks[-1])
        while progress.done < until and progress.stopped is None:
            j = progress.done
            begun = time.perf_counter()
            progress.rows.append(self.outputs(progress.session, slices[j]))
            progress.seconds += time.perf_counter() - begun
            if progress.complete:
                self._final_look(progress, threshold)
                return
            if threshold <= 0:
                continue
            hits = self.hits(progress)
            if hits is None:
                continue
            drop = self.drop_range(progress, alpha_look)
            look = look_evidence(
                hits, progress.total, threshold, alpha_look, j + 1, len(slices), drop
            )
            progress.looks.append(look)
            if look["hopeless"]:
                raise self._pruned(look, progress.attrs)
            if stop is not None:
                progress.stopped = stop(look)

    def outputs(self, session, batches=None) -> np.ndarray:
        """The candidate's outputs on `batches` (default: every evaluation batch); a failure
        inside onnxruntime is the trial's (`TrialError`)."""
        try:
            return self.task.outputs(session, batches)
        except TrialError:
            raise
        except Exception as exc:  # noqa: BLE001
            reason = failure_reason(exc)
            raise TrialError(f"onnxruntime failed running the model: {reason}") from exc

    def whole(self, session) -> dict:
        """The metric on every example, unpruned, with the paired difference from fp32 where
        the metric has labels: a partly scored config completed (`search.completion`)."""
        begun = time.perf_counter()
        outputs = self.outputs(session)
        return {
            "accuracy": self.task.score(outputs, self.fp32_outputs),
            "examples": len(outputs),
            "seconds": round(time.perf_counter() - begun, 3),
            **self.accuracy_difference(outputs),
        }

    def hits(self, progress: Progress) -> np.ndarray | None:
        """1 per example seen so far where the candidate scores (per-example metrics only)."""
        return per_example_hits(
            self.task.metric,
            np.concatenate(progress.rows),
            self.task.eval_references,
            self.fp32_outputs,
        )

    def drop_range(self, progress: Progress, alpha: float) -> tuple[float, float] | None:
        """Bounds on the drop from fp32 over every example (`search.early.drop_range`)."""
        return drop_range(
            self.task.metric,
            np.concatenate(progress.rows),
            self.task.eval_references,
            self.fp32_outputs,
            progress.total,
            alpha,
        )

    def _final_look(self, progress: Progress, threshold: float) -> None:
        outputs = np.concatenate(progress.rows)
        metric = self.task.score(outputs, self.fp32_outputs)
        if not math.isfinite(metric):
            raise TrialError(f"accuracy is {metric}")
        final = {
            "look": progress.slices,
            "looks": progress.slices,
            "examples_seen": progress.total,
            "examples_total": progress.total,
            "metric_so_far": round(metric, 5),
            "metric_ceiling": round(metric, 5),
            "threshold": round(threshold, 5),
            "alpha_per_look": 0.0,
            "bound": "exact: every example seen",
            "hopeless": metric < threshold - 1e-12,
        }
        progress.looks.append(final)
        progress.metric = metric
        if final["hopeless"]:
            raise self._pruned(final, progress.attrs)

    def result(self, progress: Progress) -> tuple[np.ndarray, float, list[dict]]:
        """(outputs so far, the metric, the looks): the metric on every example, or, where
        the scoring stopped early, fp32's metric on every example plus the config's paired
        difference from fp32 on the examples seen (unbiased, since the slices are a uniform
        random sample). Paired, so a sample that happens to be hard for both does not read
        as a drop: the estimate's drop is the one `search.early.decided` bounded. For
        `agreement` (fp32 scores 1 everywhere) it is the mean on the examples seen."""
        outputs = np.concatenate(progress.rows)
        if progress.metric is not None:
            return outputs, progress.metric, progress.looks
        hits = self.hits(progress)
        if hits is None:
            raise TrialError("scoring stopped before every example was seen")
        fp32_hits = per_example_hits(
            self.task.metric,
            self.fp32_outputs[: len(hits)],
            self.task.eval_references,
            self.fp32_outputs,
        )
        return outputs, self.fp32_accuracy + float(np.mean(hits - fp32_hits)), progress.looks

    def _pruned(self, look: dict, attrs: dict) -> TrialPruned:
        metric = self.task.metric
        reason = (
            f"pruned after {look['examples_seen']} of {look['examples_total']} examples: "
            f"{metric} {look['metric_so_far']:.3f} so far, at most {look['metric_ceiling']:.3f} "
            f"on all ({look['bound']}), below fp32 {self.fp32_accuracy:.3f} - "
            f"{self.prune.drop:g} = {look['threshold']:.3f}"
        )
        return TrialPruned(reason, look, attrs)
