"""Beam search over the space: seed 004's operator beam, generalized and made resumable.

Round 0 evaluates every single-operator config (each other dimension at its default), beside
the seed recipes the search began with (`search.seeds`). Each
later round keeps the `width` best configs so far, in the order documented in
`search.ranking`, and evaluates their neighbours: one more operator, or one other dimension
changed. A config is never evaluated twice (equal canonical configs share a key). The search
stops when a round leaves the kept set unchanged, or when no new neighbour is left.

The beam keeps no state: `next_round` replays the rounds from the study's finished trials,
so a killed search resumes where it stopped, and trials evaluated by anyone else (Optimum's
presets, an earlier sampler) are reused rather than repeated.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import optuna
from optuna.trial import TrialState

from search.config import QuantConfig
from search.errors import ConfigError
from search.ranking import beam_order
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


class BeamSearch(Strategy):
    def __init__(self, width: int = 4, max_drop: float = 0.01, defer_moves: bool = True) -> None:
        self.width = width
        self.max_drop = max_drop
        self.defer_moves = defer_moves  # off: every move every round (the beam before)
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

    def top(self, keys: list[str], done: dict[str, Record], fp32_accuracy: float) -> list[str]:
        complete = [k for k in keys if done[k].state == TrialState.COMPLETE]
        # A config no faster and no more accurate than fp32 is dominated by the fp32 model
        # itself: its neighbours are reached from better members (an added operator commutes),
        # so keeping it spends a round's trials on slow configs (5 of 19 on the benchmark
        # table, neighbours of a Gather-only config at 0.98x). Kept only if nothing else is.
        useful = [
            k
            for k in complete
            if done[k].values[1] > 1.0 or done[k].values[0] > fp32_accuracy + 1e-12
        ]
        complete = useful or complete
        points = [done[k].values for k in complete]
        intervals = [
            (
                done[k].attrs.get("speedup_low", done[k].values[1]),
                done[k].attrs.get("speedup_high", done[k].values[1]),
            )
            for k in complete
        ]
        order = beam_order(points, fp32_accuracy, self.max_drop, intervals)
        return [complete[i] for i in order[: self.width]]

    def deferred(self, measured: dict[str, tuple[QuantConfig, Record]]) -> dict[str, str]:
        """Moves that lost clearly every time they were tried, at least `DEFER_AFTER` times.

        Every pair of measured configs one move apart is a try of that move, whoever
        proposed them. A try is lost when the moved config's speedup interval lies wholly
        below the other's (the two 95% intervals do not overlap) and it is not clearly more
        accurate (`_more_accurate`). All of at least three tries lost: a sign test that a move
        which helps half the time would pass with chance 1/8 or less, each loss itself
        significant. Uint8 weights on a CPU where they are slower than fp32, or graph
        optimization "basic", stop costing a trial per beam member."""
        tries: dict[str, list[bool]] = {}
        items = list(measured.values())
        for a_config, a in items:
            for b_config, b in items:
                move = move_between(a_config, b_config)
                if move is None:
                    continue
                slower = b.attrs.get("speedup_high", b.values[1]) < a.attrs.get(
                    "speedup_low", a.values[1]
                )
                tries.setdefault(move, []).append(slower and not _more_accurate(b, a))
        return {
            move: f"lost {len(t)} of {len(t)} tries (speedup interval below, not more accurate)"
            for move, t in sorted(tries.items())
            if len(t) >= DEFER_AFTER and all(t)
        }

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
            top = self.top(list(members), done, fp32)
            if kept is not None and set(top) == set(kept):
                return Round(number, [], top, converged=True, deferred=deferred)
            kept = top
            # Evidence from the rounds replayed so far only, so replaying a study gives the
            # same rounds whatever later rounds measured.
            measured = {
                k: (c, done[k])
                for k, c in members.items()
                if k in done and done[k].state == TrialState.COMPLETE and done[k].values
            }
            deferred = self.deferred(measured) if self.defer_moves else {}
            fresh: dict[str, QuantConfig] = {}
            held: dict[str, QuantConfig] = {}  # neighbours through a deferred move
            for key in top:
                for neighbour in neighbours(space, members[key]):
                    if neighbour.key not in members:
                        move = move_between(members[key], neighbour)
                        target = held if move in deferred else fresh
                        target.setdefault(neighbour.key, neighbour)
            fresh = fresh or held  # deferred moves are tried again when nothing else is left
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
