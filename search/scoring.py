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

import numpy as np

from search.config import make_session_options
from search.early import PruneSettings, look_evidence, per_example_hits
from search.errors import QsearchError, TaskError, TrialError, TrialPruned, failure_reason
from search.measure import make_session
from search.metrics import LABEL_METRICS
from search.stats import paired_accuracy_difference
from search.tasks.base import TextClassificationTask


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
        d = paired_accuracy_difference(
            outputs.argmax(-1) == refs, self.fp32_outputs.argmax(-1) == refs
        )
        return {
            "accuracy_diff": d.diff,
            "accuracy_diff_low": d.low,
            "accuracy_diff_high": d.high,
            "mcnemar_p": d.mcnemar_p,
            "discordant_examples": d.discordant,
        }

    def score(self, session, attrs: dict) -> tuple[np.ndarray, float, list[dict]]:
        """The metric, slice by slice (`task.eval_slices`), pruning as soon as the bound
        allows; returns (outputs, metric, the looks' evidence). Raises `TrialPruned` (with
        `attrs`) or `TrialError`."""
        slices = self.task.eval_slices
        total = sum(len(b) for part in slices for b in part)
        alpha_look = self.prune.alpha / max(1, len(slices) - 1)
        threshold = self.prune_threshold
        rows: list[np.ndarray] = []
        looks: list[dict] = []
        for j, part in enumerate(slices):
            try:
                rows.append(self.task.outputs(session, part))
            except TrialError:
                raise
            except Exception as exc:  # noqa: BLE001
                raise TrialError(
                    f"onnxruntime failed running the model: {failure_reason(exc)}"
                ) from exc
            if j == len(slices) - 1 or threshold <= 0:
                continue
            hits = per_example_hits(
                self.task.metric,
                np.concatenate(rows),
                self.task.eval_references,
                self.fp32_outputs,
            )
            if hits is None:
                continue
            look = look_evidence(hits, total, threshold, alpha_look, j + 1, len(slices))
            looks.append(look)
            if look["hopeless"]:
                raise self._pruned(look, attrs)
        outputs = np.concatenate(rows)
        metric = self.task.score(outputs, self.fp32_outputs)
        if not math.isfinite(metric):
            raise TrialError(f"accuracy is {metric}")
        final = {
            "look": len(slices),
            "looks": len(slices),
            "examples_seen": total,
            "examples_total": total,
            "metric_so_far": round(metric, 5),
            "metric_ceiling": round(metric, 5),
            "threshold": round(threshold, 5),
            "alpha_per_look": 0.0,
            "bound": "exact: every example seen",
            "hopeless": metric < threshold - 1e-12,
        }
        looks.append(final)
        if final["hopeless"]:
            raise self._pruned(final, attrs)
        return outputs, metric, looks

    def _pruned(self, look: dict, attrs: dict) -> TrialPruned:
        metric = self.task.metric
        reason = (
            f"pruned after {look['examples_seen']} of {look['examples_total']} examples: "
            f"{metric} {look['metric_so_far']:.3f} so far, at most {look['metric_ceiling']:.3f} "
            f"on all ({look['bound']}), below fp32 {self.fp32_accuracy:.3f} - "
            f"{self.prune.drop:g} = {look['threshold']:.3f}"
        )
        return TrialPruned(reason, look, attrs)
