"""Accuracy-driven fallback that times what it keeps (`qsearch run --fallback`).

Neural Compressor's basic strategy and NNCF's `quantize_with_accuracy_control` revert the most
sensitive parts of a model to fp32 until the metric is met, and stop at the first model that
passes, untimed. Here every step is a trial (quantized, scored and timed), and the answer is
the fastest measured config within the bar:

1. *Base*: the fastest config measured so far in the study by anyone else (seeds, presets, an
   earlier strategy) that the space holds, else the space's default config with every
   operator. Its sensitivity table (`search.sensitivity`) is computed once before the search
   (`prepare`, cached on disk) and stored in the study.
2. *Revert*: the base, then the base with the most costly group kept fp32, then the two most
   costly, ... until a step is within `--max-drop` of fp32 (or every group is fp32).
3. *Trim*: sensitivity is measured one group at a time and errors do not add up, so some
   reverted groups may not be needed. From the passing set, each reverted group, least
   costly first, is quantized again; the result is kept when it stays within the bar and
   is faster. Each try is a trial.

The strategy keeps no state: `walk` replays the path from the study's answered trials (a
config's trial, wherever it came from, answers its step), so a killed search resumes. Groups
are the model's parts (`layer<i>.<role>`, `embeddings`, `head`), added to the space as
fallback dimensions (`bind`), so each step is a config the space holds and the samplers and
the report read it like any other.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna

from search.config import QuantConfig
from search.errors import ConfigError, QsearchError
from search.ranking import within_drop
from search.space import SearchSpace
from search.strategies.base import Proposal, Record, Strategy, records
from search.structure import Structure, is_selector

PHASE = "fallback_phase"  # trial attribute: "revert" or "trim"
GROUPS = "fallback_groups"  # trial attribute: the groups this step keeps fp32 beyond the base


@dataclass(frozen=True)
class Step:
    """One config of the path, with the trial that answered it (None: not yet evaluated)."""

    phase: str
    groups: tuple[str, ...]
    config: QuantConfig
    record: Record | None

    @property
    def values(self) -> tuple[float, float] | None:
        return None if self.record is None else self.record.values


@dataclass(frozen=True)
class Walk:
    steps: list[Step]
    pending: QuantConfig | None  # the next config to evaluate; None when the path is done
    passed: Step | None  # the best step within the bar so far


def walk(
    base: QuantConfig,
    order: list[str],
    answered: dict[str, Record],
    fp32: float,
    max_drop: float,
) -> Walk:
    """Replay the fallback path from the answered trials (see the module docstring)."""
    steps: list[Step] = []
    seen: set[str] = set()

    def look(groups: list[str], phase: str) -> Step:
        config = base.replace(fp32_groups=sorted(set(base.fp32_groups) | set(groups)))
        step = Step(phase, tuple(groups), config, answered.get(config.key))
        if config.key not in seen:
            seen.add(config.key)
            steps.append(step)
        return step

    def ok(step: Step) -> bool:
        return step.values is not None and within_drop(step.values[0], fp32, max_drop)

    current: list[str] = []
    while True:
        step = look(current, "revert")
        if step.record is None:
            return Walk(steps, step.config, None)
        if ok(step):
            break
        if len(current) == len(order):
            return Walk(steps, None, None)  # every group fp32 and still below the bar
        current = order[: len(current) + 1]
    best = step
    for group in reversed(list(current)):
        trimmed = [g for g in current if g != group]
        step = look(trimmed, "trim")
        if step.record is None:
            return Walk(steps, step.config, best)
        if ok(step) and step.values[1] > best.values[1]:
            current, best = trimmed, step
    return Walk(steps, None, best)


def default_measure(task, base: QuantConfig) -> dict[str, Any]:
    from search.sensitivity import compute_sensitivity

    return compute_sensitivity(task, base)


class FallbackStrategy(Strategy):
    name = "fallback"

    def __init__(
        self,
        max_drop: float = 0.01,
        measure: Callable[[Any, QuantConfig], dict[str, Any]] = default_measure,
    ) -> None:
        self.max_drop = max_drop
        self.measure = measure

    def bind(self, space: SearchSpace, structure: Structure) -> SearchSpace:
        """The space with every group of the model as a fallback dimension."""
        extra = [g for g in sorted(structure.groups) if is_selector(g)]
        extra = [g for g in extra if g not in space.fallback_groups]
        return dataclasses.replace(space, fallback_groups=(*space.fallback_groups, *extra))

    def base(self, study: optuna.Study, space: SearchSpace) -> QuantConfig:
        """The fastest config measured by others that the space holds, else the space's
        default with every operator."""
        best: tuple[float, QuantConfig] | None = None
        for record in records(study):
            if record.values is None or not record.answers or "config" not in record.attrs:
                continue
            if record.attrs.get("strategy") == self.name:
                continue
            try:
                config = QuantConfig.from_dict(record.attrs["config"])
            except ConfigError:
                continue
            if space.contains(config) and (best is None or record.values[1] > best[0]):
                best = (record.values[1], config)
        return best[1] if best else space.default_config(space.operators or ())

    def prepare(self, study: optuna.Study, space: SearchSpace, task: Any) -> None:
        """Compute (or read from the cache) the base's sensitivity and store it in the study."""
        from search.sensitivity import store, stored

        base = self.base(study, space)
        current = stored(study)
        if current is None or current.get("base_key") != base.key:
            store(study, self.measure(task, base))

    def order(self, study: optuna.Study, base: QuantConfig, space: SearchSpace) -> list[str]:
        from search.sensitivity import order, stored

        sensitivity = stored(study)
        if sensitivity is None or sensitivity.get("base_key") != base.key:
            raise QsearchError(
                f"the fallback strategy needs the sensitivity of its base config "
                f"({base.describe()}) in the study, but the study holds "
                + ("none" if sensitivity is None else "another config's")
                + "; `qsearch run --fallback` computes it"
            )
        return [g for g in order(sensitivity) if g in space.fallback_groups]

    def walk(self, study: optuna.Study, space: SearchSpace) -> Walk:
        answered: dict[str, Record] = {}
        for record in records(study):
            if record.answers:
                answered.setdefault(record.key, record)
        base = self.base(study, space)
        fp32 = study.user_attrs.get("fp32_accuracy")
        if fp32 is None:
            fp32 = max((r.values[0] for r in answered.values() if r.values), default=1.0)
        return walk(base, self.order(study, base, space), answered, fp32, self.max_drop)

    def propose(self, study: optuna.Study, space: SearchSpace) -> list[Proposal]:
        path = self.walk(study, space)
        if path.pending is None:
            return []
        step = next(s for s in path.steps if s.config.key == path.pending.key)
        attrs = {"strategy": self.name, PHASE: step.phase, GROUPS: list(step.groups)}
        return [Proposal(path.pending, attrs)]


def fallback_path(study: optuna.Study) -> list[dict[str, Any]]:
    """The fallback steps recorded in a study, in trial order: what the report draws."""
    out = []
    for record in records(study):
        if record.attrs.get("strategy") != FallbackStrategy.name or PHASE not in record.attrs:
            continue
        out.append(
            {
                "trial": record.number,
                "phase": record.attrs[PHASE],
                "groups": list(record.attrs.get(GROUPS, [])),
                "accuracy": None if record.values is None else record.values[0],
                "speedup": None if record.values is None else record.values[1],
            }
        )
    return out


def speed_costs(path: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """What keeping each group fp32 cost in speed, measured on the fallback path: for two
    answered steps that differ by that one group, the speedup without it fp32 over the
    speedup with it (1.10: 10% faster quantized), from the first such pair of trials. Groups
    the path never moved alone are absent: their speed cost was not measured."""
    answered = [s for s in path if s.get("speedup")]
    out: dict[str, dict[str, Any]] = {}
    for later in answered:
        for earlier in answered:
            if earlier["trial"] >= later["trial"]:
                continue
            a, b = set(earlier["groups"]), set(later["groups"])
            if len(a ^ b) != 1:
                continue
            (group,) = a ^ b
            fp32, quantized = (later, earlier) if group in b else (earlier, later)
            out.setdefault(
                group,
                {
                    "cost": quantized["speedup"] / fp32["speedup"],
                    "trials": (quantized["trial"], fp32["trial"]),
                },
            )
    return out
