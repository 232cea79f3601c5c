"""Beam search over the space: seed 004's operator beam, generalized and made resumable.

Round 0 evaluates every single-operator config (each other dimension at its default), beside
the seed recipes the search began with (`search.seeds`). Each
later round keeps the `width` best configs so far, in the order documented in
`search.ranking`, and evaluates their neighbours: one more operator, or one other dimension
changed. A config is never evaluated twice (equal canonical configs share a key). The search
stops when a round leaves the kept set unchanged or changes it only by ties (`only_ties`), or
when no new neighbour is left.

The beam keeps no state: `next_round` replays the rounds from the study's finished trials,
so a killed search resumes where it stopped, and trials evaluated by anyone else (Optimum's
presets, an earlier sampler) are reused rather than repeated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import optuna
from optuna.trial import TrialState

from search.config import QuantConfig
from search.errors import ConfigError
from search.ranking import beam_order, within_drop
from search.space import SearchSpace
from search.space_walk import neighbours
from search.strategies.base import Proposal, Record, Strategy, records
from search.strategies.seeded import seed_configs

# A one-dimension move (field, from, to) is deferred once it has been tried at least this
# many times and lost clearly every time (see `BeamSearch.deferred`).
DEFER_AFTER = 3
DEFERRED_MOVES = "deferred_moves"  # study attribute: the moves deferred and their evidence


@dataclass(frozen=True)
class Round:
    number: int
    pending: list[QuantConfig]  # configs of this round not evaluated yet
    kept: list[str]  # keys of the beam after the last finished round
    converged: bool
    deferred: dict[str, str] = field(default_factory=dict)  # move -> evidence, in words


def _more_accurate(b: Record, a: Record) -> bool:
    """Whether `b` is clearly more accurate than `a`: their paired intervals of accuracy
    against fp32 do not overlap (trial attributes), or, without intervals, b's is higher."""
    if "accuracy_diff_low" in b.attrs and "accuracy_diff_high" in a.attrs:
        return b.attrs["accuracy_diff_low"] > a.attrs["accuracy_diff_high"]
    return b.values[0] > a.values[0]


def move_between(a: QuantConfig, b: QuantConfig) -> str | None:
    """The one-dimension change that turns `a` into `b` ("weights_dtype int8 -> uint8",
    "operators +Gather"), or None when they differ in more than one dimension."""
    va, vb = a.values(), b.values()
    changed = [name for name in va if va[name] != vb[name]]
    if len(changed) != 1:
        return None
    name = changed[0]
    if isinstance(va[name], tuple):
        added, removed = set(vb[name]) - set(va[name]), set(va[name]) - set(vb[name])
        if len(added) + len(removed) != 1:
            return None
        return f"{name} " + (f"+{added.pop()}" if added else f"-{removed.pop()}")
    return f"{name} {va[name]} -> {vb[name]}"


def _log_ratio(a: Record, b: Record) -> tuple[float, float]:
    """log(b's speedup / a's), and its standard error from the two trials' 95% intervals
    (zero where a trial has none: its speedup is taken as exact)."""

    def error(r: Record) -> float:
        low, high = r.attrs.get("speedup_low"), r.attrs.get("speedup_high")
        return math.log(high / low) / (2 * 1.96) if low and high and low > 0 else 0.0

    return math.log(b.values[1] / a.values[1]), math.hypot(error(a), error(b))


def _speed_interval(r: Record) -> tuple[float, float]:
    """A trial's 95% speedup interval; without one, its speedup taken as exact."""
    return r.attrs.get("speedup_low", r.values[1]), r.attrs.get("speedup_high", r.values[1])


def only_ties(
    top: list[str],
    kept: list[str],
    done: dict[str, Record],
    fp32: float,
    max_drop: float,
    behind: frozenset[str] = frozenset(),
) -> bool:
    """Whether the members `top` brings in, against the `kept` beam of the round before, are
    ties of those they push out: paired in rank order, each newcomer is on the same side of
    the accuracy bar as the member it replaces, its speedup interval reaches that member's,
    and it is not clearly more accurate (`_more_accurate`). Such a round changed the beam by
    the timing's noise alone: a neighbour that reads a few percent high by chance pushed out
    a member it cannot be told from, and expanding it would buy another round of neighbours
    for nothing the confirmation could tell apart. A member pushed out for standing `behind`
    a deferred move left for a reason, not by chance: that round counts."""
    new = [k for k in top if k not in kept]
    gone = [k for k in kept if k not in top]
    if len(new) != len(gone) or any(k in behind for k in gone):
        return False
    for n, g in zip(new, gone, strict=True):
        a, b = done[n], done[g]
        if within_drop(a.values[0], fp32, max_drop) != within_drop(b.values[0], fp32, max_drop):
            return False
        if _speed_interval(a)[0] > _speed_interval(b)[1] or _more_accurate(a, b):
            return False
    return True


def _best_held(held: dict[str, dict[str, QuantConfig]], top: list[str]) -> dict[str, QuantConfig]:
    """The deferred neighbours of the best-ranked member of `top` that has any."""
    for key in top:
        if held.get(key):
            return held[key]
    return {}


def _tries(
    measured: dict[str, tuple[QuantConfig, Record]],
) -> dict[str, list[tuple[str, Record, Record]]]:
    """Every pair of measured configs one move apart, by move: (the moved config's key, the
    record before the move, the record after it). One pass per round: the deferral and the
    members it leaves behind both read it."""
    tries: dict[str, list[tuple[str, Record, Record]]] = {}
    for a_config, a in measured.values():
        for key, (b_config, b) in measured.items():
            move = move_between(a_config, b_config)
            if move is not None:
                tries.setdefault(move, []).append((key, a, b))
    return tries


def _judge(tries: dict[str, list[tuple[str, Record, Record]]]) -> dict[str, str]:
    """The moves of `tries` that `BeamSearch.deferred` defers, with their evidence."""
    out = {}
    for move, pairs in sorted(tries.items()):
        t = [(*_log_ratio(a, b), not _more_accurate(b, a)) for _, a, b in pairs]
        if len(t) < DEFER_AFTER or not all(r < 0 and plain for r, _, plain in t):
            continue
        mean = sum(r for r, _, _ in t) / len(t)
        bound = mean + 1.96 * math.sqrt(sum(e * e for _, e, _ in t)) / len(t)
        if bound < 0:
            out[move] = (
                f"lost {len(t)} of {len(t)} tries, {100 * (1 - math.exp(mean)):.1f}% slower "
                f"on average (95% bound {100 * (1 - math.exp(bound)):.1f}%), not more accurate"
            )
    return out


class BeamSearch(Strategy):
    def __init__(
        self,
        width: int = 4,
        max_drop: float = 0.01,
        defer_moves: bool = True,
        settle_ties: bool = True,
    ) -> None:
        self.width = width
        self.max_drop = max_drop
        self.defer_moves = defer_moves  # off: every move every round (the beam before)
        self.settle_ties = settle_ties  # off: any change of the kept set is another round
        self.name = f"beam{width}"

    def initial(self, space: SearchSpace) -> list[QuantConfig]:
        out: dict[str, QuantConfig] = {}
        for op in space.operators or ():
            try:
                config = space.default_config([op])
            except ConfigError:
                continue  # the default mode cannot quantize this operator alone
            out.setdefault(config.key, config)
        if not out:  # e.g. a static-only operator under a dynamic default: start from all
            config = space.default_config(space.operators or ())
            out[config.key] = config
        return list(out.values())

    def top(
        self,
        keys: list[str],
        done: dict[str, Record],
        fp32_accuracy: float,
        behind: frozenset[str] = frozenset(),
    ) -> list[str]:
        """The `width` members to expand, best first. Left out while anything else is left:
        configs no faster and no more accurate than fp32, which the fp32 model itself
        dominates (their neighbours are reached from better members: an added operator
        commutes; 5 of 19 trials on the benchmark table went to neighbours of a Gather-only
        config at 0.98x), and configs `behind` a deferred move (one deferred move away from
        another member): their neighbours are that move applied to the other member's, which
        are deferred there too (a Zen 4 beam's last round was 8 neighbours of such members)."""
        complete = [k for k in keys if done[k].state == TrialState.COMPLETE]
        useful = [
            k
            for k in complete
            if (done[k].values[1] > 1.0 or done[k].values[0] > fp32_accuracy + 1e-12)
            and k not in behind
        ]
        complete = useful or complete
        points = [done[k].values for k in complete]
        intervals = [_speed_interval(done[k]) for k in complete]
        order = beam_order(points, fp32_accuracy, self.max_drop, intervals)
        return [complete[i] for i in order[: self.width]]

    def deferred(self, measured: dict[str, tuple[QuantConfig, Record]]) -> dict[str, str]:
        """Moves that lost every time they were tried, at least `DEFER_AFTER` times, and
        clearly so taken together.

        Every pair of measured configs one move apart is a try of that move, whoever
        proposed them. A try is lost when the moved config reads slower and is not clearly
        more accurate (`_more_accurate`): all of at least three tries lost is a sign test
        that a move which helps half the time passes with chance 1/8 or less. "Clearly" is
        judged on the tries together: the mean log ratio of the moved config's speedup to the
        other's, with its 95% bound from the tries' own intervals, must lie below zero. On a
        Zen 4, graph optimization "basic" lost its four tries by 4-19% with two of the four
        pairs of intervals overlapping: a rule asking every pair to separate never deferred
        it, and the beam's last round was that move on every member."""
        return _judge(_tries(measured))

    def next_round(self, study: optuna.Study, space: SearchSpace) -> Round:
        done: dict[str, Record] = {}
        for record in records(study):
            if record.answers:  # a same-graph copy answers its own config; a duplicate repeats
                done.setdefault(record.key, record)
        fp32 = study.user_attrs.get("fp32_accuracy")
        if fp32 is None:
            complete = [r.values[0] for r in done.values() if r.values]
            fp32 = max(complete, default=1.0)
        members: dict[str, QuantConfig] = {}
        # Round 0: the study's seed recipes (already evaluated first) and the single operators
        seeds = [c for c in seed_configs(study) if space.contains(c)]
        candidates = list({c.key: c for c in [*seeds, *self.initial(space)]}.values())
        kept: list[str] | None = None
        deferred: dict[str, str] = {}
        number = 0
        while True:
            for config in candidates:
                members.setdefault(config.key, config)
            pending = [c for c in candidates if c.key not in done]
            if pending:
                return Round(number, pending, kept or [], converged=False, deferred=deferred)
            # Evidence from the rounds replayed so far only, so replaying a study gives the
            # same rounds whatever later rounds measured.
            measured = {
                k: (c, done[k])
                for k, c in members.items()
                if k in done and done[k].state == TrialState.COMPLETE and done[k].values
            }
            tries = _tries(measured) if self.defer_moves else {}
            deferred = _judge(tries)
            # Members one deferred move away from another member (the moved side of a try)
            behind = frozenset(key for move in deferred for key, _, _ in tries[move])
            top = self.top(list(members), done, fp32, behind)
            if kept is not None and (
                set(top) == set(kept)
                or (self.settle_ties and only_ties(top, kept, done, fp32, self.max_drop, behind))
            ):
                return Round(number, [], top, converged=True, deferred=deferred)
            kept = top
            fresh: dict[str, QuantConfig] = {}
            held: dict[str, dict[str, QuantConfig]] = {}  # member -> its deferred neighbours
            for key in top:
                for neighbour in neighbours(space, members[key]):
                    if neighbour.key not in members:
                        move = move_between(members[key], neighbour)
                        target = held.setdefault(key, {}) if move in deferred else fresh
                        target.setdefault(neighbour.key, neighbour)
            # Deferred moves are tried again when nothing else is left: on the first member
            # that has such a neighbour, not on every member (each try that loses again
            # would cost a trial per member, as the beam before did).
            fresh = fresh or _best_held(held, top)
            if not fresh:
                return Round(number, [], top, converged=True, deferred=deferred)
            candidates = list(fresh.values())
            number += 1

    def propose(self, study: optuna.Study, space: SearchSpace) -> list[Proposal]:
        round_ = self.next_round(study, space)
        if round_.deferred != (study.user_attrs.get(DEFERRED_MOVES) or {}):
            study.set_user_attr(DEFERRED_MOVES, round_.deferred)  # the dashboard shows it
        return [
            Proposal(c, {"strategy": self.name, "beam_round": round_.number})
            for c in round_.pending
        ]
