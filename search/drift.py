"""The drift floor, read from the study itself: how far apart separate confirmation passes
measure the same config on this machine, beyond what their own rounds' spread explains.

Why: one timing run cannot see the drift between minutes, so every speedup interval is
widened to at least a floor (`TimingSettings.floor`, 5%). That figure came from one AVX2 VM;
on an AMD EPYC Zen 3 a config's pooled speedup once moved between independent confirmations
with a CV of 3.1-3.9%, and intervals with the 5% floor covered the median of all of them only
82% of the time. A study says how much its machine drifts wherever it timed one config in
several confirmation passes (a pass that changed the frontier is followed by another; a
resumed search confirms again): each pass's mean log speedup has its own noise, read from
the spread of its rounds, and what the passes' means differ by beyond that noise, pooled over
configs, is the SD of the offset a stretch of minutes carries (the benchmark's "persistent
per repeat"). The floor becomes 1.96 of it where that is wider than the default.

Only passes count, not the trial's own timing: 12 s of trial are too short to tell their
noise from drift (their interval is floored already), and a trial is timed in another way
(alone with fp32, in the search's process) than the rounds (beside the other candidates, in
a fresh one). Counting trials read a 13% floor on `make run`'s study on a Zen 3, where the
passes' means agreed within their rounds' noise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from search.measure import TimingSettings

DEFAULT_FLOOR = TimingSettings.floor
Z95 = 1.96  # two-sided 95%, normal
# Degrees of freedom (a config timed in k passes gives k - 1) before the study's figure is
# used: with 6 the SD is known to within about 30%, and the default stays the least floor.
MIN_DOF = 6


@dataclass(frozen=True)
class DriftFloor:
    floor: float  # relative half-width: the narrowest pooled interval
    offset_sd: float | None  # SD of a pass's offset (log scale); None: not estimated
    configs: int  # configs timed in two passes or more
    dof: int  # their passes beyond the first, together

    @property
    def estimated(self) -> bool:
        return self.offset_sd is not None and self.dof >= MIN_DOF

    def describe(self) -> str:
        if not self.estimated:
            return (
                f"+-{100 * self.floor:.1f}% (the default: {self.dof} repeated confirmation "
                f"passes of {self.configs} configs, {MIN_DOF} needed to read this machine's)"
            )
        return (
            f"+-{100 * self.floor:.1f}% (this machine's: confirmation passes of one config "
            f"differ beyond their rounds' noise with an SD of {100 * self.offset_sd:.1f}%, "
            f"over {self.configs} configs, {self.dof} degrees of freedom)"
        )


@dataclass(frozen=True)
class Stretch:
    """One stretch of minutes that timed a config: its mean log speedup and that mean's own
    variance (from the spread of its rounds)."""

    mean: float
    variance: float


def stretch_of(logs: Sequence[float]) -> Stretch:
    values = np.asarray(logs, dtype=float)
    return Stretch(float(values.mean()), float(values.var(ddof=1)) / len(values))


def offset_sd(stretches: Sequence[Sequence[Stretch]]) -> tuple[float | None, int, int]:
    """The SD of a stretch's offset from per-config lists of stretches: the variance of
    each config's stretch means around its own mean, pooled over the configs with two or
    more (degrees of freedom as weights), less the mean variance of a stretch's own mean;
    zero where that is all. Returns (SD or None, such configs, degrees of freedom)."""
    squares, dof, configs, own = 0.0, 0, 0, []
    for group in stretches:
        if len(group) < 2:
            continue
        means = np.asarray([s.mean for s in group])
        squares += float(np.sum((means - means.mean()) ** 2))
        dof += len(group) - 1
        configs += 1
        own += [s.variance for s in group]
    if not dof:
        return None, 0, 0
    return math.sqrt(max(0.0, squares / dof - float(np.mean(own)))), configs, dof


def floor_from(stretches: Sequence[Sequence[Stretch]]) -> DriftFloor:
    """The floor these stretches support: 1.96 offset SDs where wider than the default."""
    sd, configs, dof = offset_sd(stretches)
    if sd is None or dof < MIN_DOF:
        return DriftFloor(DEFAULT_FLOOR, sd, configs, dof)
    return DriftFloor(max(DEFAULT_FLOOR, math.expm1(Z95 * sd)), sd, configs, dof)


def confirmation_passes(blocks: Sequence[Mapping]) -> list[Stretch]:
    """A config's confirmation passes of two rounds or more, as stretches: its round blocks
    in order, a pass ending where the round numbers start again."""
    passes: list[list[float]] = []
    last: int | None = None
    for b in blocks:
        if b.get("source") != "round" or not b.get("speedup") or b["speedup"] <= 0:
            continue
        r = b.get("round")
        log = math.log(b["speedup"])
        if r is not None and last is not None and r > last:
            passes[-1].append(log)
        else:
            passes.append([log])
        last = r
    return [stretch_of(p) for p in passes if len(p) >= 2]


def study_floor(blocks_by_trial: Mapping[int, Sequence[Mapping]]) -> DriftFloor:
    """The floor for a study whose trials' blocks are given."""
    return floor_from([confirmation_passes(blocks) for blocks in blocks_by_trial.values()])
