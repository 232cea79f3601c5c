"""The drift floor, read from the study itself: how far apart separate stretches of time
measure the same config on this machine.

Why: one timing run cannot see the drift between minutes, so every speedup interval is
widened to at least a floor (`TimingSettings.floor`, 5%). That figure came from one AVX2 VM;
on an AMD EPYC Zen 3 a config's pooled speedup still moved between independent
confirmations with a CV of 3.1-3.9%, and intervals with the 5% floor covered the median of
all of them only 82% of the time. The machine at hand says how much it drifts wherever the
study timed one config in separate stretches: its trial, the end-of-search confirmation
pass, each later `qsearch measure` run. The spread of those stretches' means around each
config's own mean, pooled over configs, estimates the SD of the offset a stretch carries;
the floor becomes 1.96 of it where that is wider than the default, once enough repeated
stretches were timed. Each stretch's own noise is left in the estimate (it would take each block's
raw pairs to remove), so it errs wide.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from search.measure import TimingSettings

DEFAULT_FLOOR = TimingSettings.floor
Z95 = 1.96  # two-sided 95%, normal
# Degrees of freedom (a config timed in k stretches gives k - 1) before the study's figure is
# used: with 6 the SD is known to within about 30%, and the default stays the least floor.
MIN_DOF = 6


@dataclass(frozen=True)
class DriftFloor:
    floor: float  # relative half-width: the narrowest pooled interval
    offset_sd: float | None  # SD of a stretch's offset (log scale); None: not estimated
    configs: int  # configs timed in two stretches or more
    dof: int  # their stretches beyond the first, together

    @property
    def estimated(self) -> bool:
        return self.offset_sd is not None and self.dof >= MIN_DOF

    def describe(self) -> str:
        if not self.estimated:
            return (
                f"+-{100 * self.floor:.1f}% (the default: {self.dof} repeated stretches of "
                f"{self.configs} configs, {MIN_DOF} needed to read this machine's)"
            )
        return (
            f"+-{100 * self.floor:.1f}% (this machine's: stretches of one config differ with "
            f"an SD of {100 * self.offset_sd:.1f}% over {self.configs} configs, {self.dof} "
            "degrees of freedom)"
        )


def offset_sd(stretches: Sequence[Sequence[float]]) -> tuple[float | None, int, int]:
    """The SD of a stretch's offset from per-config lists of stretch means (log speedups):
    the variance of each config's stretches around its own mean, pooled over the configs
    with two or more (degrees of freedom as weights). Returns (SD or None, such configs,
    degrees of freedom)."""
    squares, dof, configs = 0.0, 0, 0
    for means in stretches:
        if len(means) < 2:
            continue
        values = np.asarray(means, dtype=float)
        squares += float(np.sum((values - values.mean()) ** 2))
        dof += len(values) - 1
        configs += 1
    if not dof:
        return None, 0, 0
    return math.sqrt(squares / dof), configs, dof


def floor_from(stretches: Sequence[Sequence[float]]) -> DriftFloor:
    """The floor these stretches support: 1.96 offset SDs where wider than the default."""
    sd, configs, dof = offset_sd(stretches)
    if sd is None or dof < MIN_DOF:
        return DriftFloor(DEFAULT_FLOOR, sd, configs, dof)
    return DriftFloor(max(DEFAULT_FLOOR, math.expm1(Z95 * sd)), sd, configs, dof)


def stretch_means(blocks: Sequence[Mapping]) -> list[float]:
    """A config's blocks grouped by the stretch of time that timed them, each stretch's mean
    log speedup: the trial's own block, each confirmation pass (its rounds, numbered from 0
    again in the next pass), each `measure` run."""
    groups: list[list[float]] = []
    last_round: int | None = None
    for b in blocks:
        if "speedup" not in b or not b["speedup"] or b["speedup"] <= 0:
            continue
        log = math.log(b["speedup"])
        r = b.get("round") if b.get("source") == "round" else None
        if r is not None and last_round is not None and r > last_round:
            groups[-1].append(log)
        else:
            groups.append([log])
        last_round = r
    return [float(np.mean(g)) for g in groups]


def study_floor(blocks_by_trial: Mapping[int, Sequence[Mapping]]) -> DriftFloor:
    """The floor for a study whose trials' blocks (their own first) are given."""
    return floor_from([stretch_means(blocks) for blocks in blocks_by_trial.values()])
