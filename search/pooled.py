"""Pooled speed: every timed block of a config (its trial, each confirmation round, later
`qsearch measure` runs) pooled into one speedup with one interval.

Why pool: one timing run cannot see the machine's drift between minutes (five separate runs
of one config spread with a CV of 2.5-4%, each run's own interval +-1%), so the spread
between blocks timed at different times is what the interval must come from, never
narrower than the drift floor. Why same-round ratios: a confirmation times its candidates
round-robin (A, B, C, A, B, C, ... each against fp32), so a drift of the minutes hits all of
them alike; the order of two candidates and whether they tie is read from their ratios in
the same rounds, where the drift cancels, not from levels measured minutes apart.

The blocks live in the study (a finished Optuna trial cannot be changed): the study user
attribute `speed_blocks:<trial>` holds each trial's blocks after its own, and
`confirmation_rounds` the last confirmation pass (its candidates and each round's log
ratios). Pure functions read them, so every view computes the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import optuna
from optuna.trial import FrozenTrial

from search.measure import TimingSettings
from search.stats import t975

BLOCKS_PREFIX = "speed_blocks:"  # + trial number: that trial's blocks after its own
ROUNDS = "confirmation_rounds"  # {"trials": [n, ...], "logs": [[log ratio or None, ...], ...]}
FLOOR = TimingSettings.floor  # the run-to-run drift no single run sees (relative half-width)


@dataclass(frozen=True)
class Pooled:
    speedup: float
    low: float
    high: float
    blocks: int  # timed blocks pooled (the trial's own is one)

    def to_dict(self) -> dict:
        return {
            "speedup": round(self.speedup, 5),
            "low": round(self.low, 5),
            "high": round(self.high, 5),
            "blocks": self.blocks,
        }


def block(speed, source: str, **extra) -> dict:
    """A stored block from a `Speedup` (or anything with ratio/low/high/pairs/loaded). A
    confirmation round's `pairs` are the pairs against fp32 alone that would read its
    speedup as closely (`search.pair_graph`): what its weight in `pool` should be."""
    return {
        "source": source,
        "speedup": float(speed.ratio),
        "low": float(speed.low),
        "high": float(speed.high),
        "pairs": int(getattr(speed, "pairs", 1) or 1),
        "loaded": bool(getattr(speed, "loaded", False)),
        **extra,
    }


def trial_block(trial: FrozenTrial) -> dict:
    """A measured trial's own timing as a block."""
    a, value = trial.user_attrs, float(trial.values[1])
    return {
        "source": "trial",
        "speedup": value,
        "low": float(a.get("speedup_low", value)),
        "high": float(a.get("speedup_high", value)),
        "pairs": int((a.get("timing") or {}).get("pairs") or 1),
        "loaded": bool(a.get("loaded", False)),
    }


def stored_blocks(study: optuna.Study) -> dict[int, list[dict]]:
    """Each trial's blocks after its own (confirmation rounds, `measure` runs)."""
    return {
        int(key[len(BLOCKS_PREFIX) :]): list(value)
        for key, value in study.user_attrs.items()
        if key.startswith(BLOCKS_PREFIX)
    }


def add_blocks(study: optuna.Study, number: int, new: Sequence[dict]) -> None:
    """Append blocks to trial `number`'s record (one attribute per trial, so two workers
    adding blocks of different trials do not overwrite each other)."""
    key = f"{BLOCKS_PREFIX}{number}"
    study.set_user_attr(key, list(study.user_attrs.get(key) or []) + list(new))


def pool(blocks: Sequence[Mapping], floor: float = FLOOR) -> Pooled:
    """One block: its own estimate. Several: the pair-weighted geometric mean, and a
    t-interval from the spread between blocks, at least the drift floor wide (one block's
    own interval too, where the floor is wider: `search.drift` may raise it)."""
    if len(blocks) == 1:
        b = blocks[0]
        edge = 1 + floor
        return Pooled(
            b["speedup"], min(b["low"], b["speedup"] / edge), max(b["high"], b["speedup"] * edge), 1
        )
    logs = np.log([b["speedup"] for b in blocks])
    weights = np.asarray([max(1, b.get("pairs") or 1) for b in blocks], dtype=float)
    mean = float(np.average(logs, weights=weights))
    k = len(blocks)
    half = t975(k - 1) * float(np.std(logs, ddof=1)) / math.sqrt(k)
    half = max(half, math.log1p(floor))
    return Pooled(math.exp(mean), math.exp(mean - half), math.exp(mean + half), k)


def last_pass(study: optuna.Study) -> tuple[list[int], list[list[float | None]]]:
    """The last confirmation pass: its candidates and, per round, each one's log ratio
    (None where that round failed for it)."""
    rounds = study.user_attrs.get(ROUNDS) or {}
    return [int(n) for n in rounds.get("trials", [])], [list(r) for r in rounds.get("logs", [])]


def _round_means(logs: list[list[float | None]], count: int) -> list[float | None]:
    out: list[float | None] = []
    for i in range(count):
        values = [r[i] for r in logs if r[i] is not None]
        out.append(float(np.mean(values)) if values else None)
    return out


def relevel(
    pooled: Mapping[int, Pooled], trials: Sequence[int], logs: list[list[float | None]]
) -> dict[int, Pooled]:
    """The last pass's candidates placed by their same-round ratios: each keeps the mean of
    its rounds, shifted by one offset common to all of them (the mean gap between their
    pooled and round levels, i.e. the drift of the pass's minutes estimated from every
    block). Their order is then the rounds' order; their level uses every block."""
    means = _round_means(logs, len(trials))
    members = [(n, m) for n, m in zip(trials, means, strict=True) if m is not None and n in pooled]
    if not members:
        return dict(pooled)
    offset = float(np.mean([math.log(pooled[n].speedup) - m for n, m in members]))
    out = dict(pooled)
    for n, m in members:
        p = pooled[n]
        centre = math.exp(m + offset)
        out[n] = Pooled(centre, centre * p.low / p.speedup, centre * p.high / p.speedup, p.blocks)
    return out


def same_round_interval(
    trials: Sequence[int], logs: list[list[float | None]], a: int, b: int
) -> tuple[float, float, float] | None:
    """The ratio of `a`'s speedup to `b`'s from the rounds that timed both, with its 95%
    interval from the spread between rounds (no drift floor: the drift cancels within a
    round); None when fewer than two rounds timed both."""
    if a not in trials or b not in trials:
        return None
    i, j = trials.index(a), trials.index(b)
    diffs = [r[i] - r[j] for r in logs if r[i] is not None and r[j] is not None]
    if len(diffs) < 2:
        return None
    mean = float(np.mean(diffs))
    half = t975(len(diffs) - 1) * float(np.std(diffs, ddof=1)) / math.sqrt(len(diffs))
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half)


def resolution(trials: Sequence[int], logs: list[list[float | None]]) -> tuple[float, int] | None:
    """What a confirmation pass could tell apart: the median, over every two candidates that
    at least two of its rounds timed together, of their same-round ratio interval's relative
    half-width, with the pass's rounds (None: no such two). Candidates closer than that tie;
    where a round's noise is its pairs' jitter, the half-width falls with the square root of
    the timing (on a 2-core AMD EPYC Zen 3 VM one pair's log ratio spreads ~10%, and
    `make run`'s pass of 19 configs, 36 s each in 6 rounds, told +-7.2% apart)."""
    halves = []
    for k, a in enumerate(trials):
        for b in trials[k + 1 :]:
            ratio = same_round_interval(trials, logs, a, b)
            if ratio is not None:
                halves.append(math.log(ratio[2] / ratio[1]) / 2)
    if not halves:
        return None
    return math.expm1(float(np.median(halves))), len(logs)


def tie_groups_by_rounds(
    order: Sequence[int],
    intervals: Mapping[int, tuple[float, float]],
    trials: Sequence[int],
    logs: list[list[float | None]],
) -> list[int]:
    """Tie groups of trials given fastest first: a trial ties with its group's leader when
    their same-round ratio's interval includes 1, or, without rounds timing both, when its
    interval reaches the leader's. Returns a group per trial in `order`."""
    groups: list[int] = []
    leader: int | None = None
    for n in order:
        if leader is None:
            tied = False
        elif (ratio := same_round_interval(trials, logs, leader, n)) is not None:
            tied = ratio[1] <= 1.0  # the leader over this one: 1 within the interval
        else:
            tied = intervals[n][1] >= intervals[leader][0]
        if not tied:
            leader = n
            groups.append((groups[-1] + 1) if groups else 0)
        else:
            groups.append(groups[-1])
    return groups
