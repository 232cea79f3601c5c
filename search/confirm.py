"""Confirmation: re-time the frontier, round-robin, so neither a lucky measurement nor the
machine's drift between minutes decides it.

The configs on the Pareto frontier, and those whose speedup interval reaches a frontier
config's at no worse accuracy, are timed again in rounds: each round times every candidate
against fp32 in one run, taking turns a block at a time (`Evaluator.retime_round`,
`search.interleave`; each round on new sessions of the same quantized files, in one new
process where trials run in a child). A drift of the
machine's minutes, and of its seconds, then hits every candidate alike: sequential
confirmations, one config after another, once read a whole pass ~6% low and let the minute
each config was timed in decide their order. Each round's result is one more timed block of
the config (`search.pooled`), so its speedup pools the trial, the rounds and later `measure`
runs, and the order and ties of the pass's candidates come from their ratios in the same
rounds. A pass that moves the frontier (a lowered config promotes another) is followed by
another over the new candidates, all of them together, so no config reaches the frontier
unconfirmed. Everything lives in the study's user attributes (`speed_blocks:<trial>`,
`confirmation_rounds`, `confirmations`), since a finished Optuna trial cannot be changed:
the study stays the one record of the search.

Its accuracy twin, `complete_frontier`, runs before and after it: a config whose scoring
stopped once the search's question about it was answered (a large model, `search.early`) is
scored on every example if the frontier may hold it (`search.completion`).

Of several workers sharing a study, the one that finished its last trial confirms: the
others reach the end together with it (one waiting for the other's last trial sees the
budget reached at the moment that worker does), so "nothing is running elsewhere" alone
would let all of them re-time the same frontier side by side.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from datetime import datetime

import optuna
import pandas as pd

from search.completion import COMPLETE_PREFIX, completed, to_complete
from search.config import QuantConfig
from search.errors import TrialError
from search.liveness import GRACE_PERIOD, HOST, is_interrupted, worker_id
from search.objective import Evaluator
from search.pooled import ROUNDS, add_blocks, block, last_pass, pool
from search.ranking import non_dominated
from search.results import CONFIRMATIONS, confirmations, fastest_preset, trial_rows

# New sessions each round: a session keeps an offset of its own for its life (where its
# buffers landed), which pairing with fp32 cannot cancel; drawn again each round, it
# averages over the rounds. `benchmarks/confirmation.py`, 10 repeats x 72 s of 4 configs
# on an AMD EPYC Zen 4: each config's speedup CV 1.05-1.43% on kept sessions, 0.74-1.10%
# on fresh ones; the ratio between two configs 0.81-1.81% against 0.65-1.44%.
FRESH_SESSIONS = True
# And a new process for the confirmation, kept through its rounds and passes, where the
# evaluator runs in a child (`IsolatedEvaluator.renew`): a child that has run a search's
# trials times int8 slower than a new one, all configs alike, glibc's allocator fixed or not
# (on a 2-core Intel Xeon with AVX512-VNNI and AMX, `benchmarks/confirm_process.py --trials
# 40`: a child aged by 40 trials read 0.970x [0.956, 0.985] of new children in the same
# minutes). Not a new process each round: there, `benchmarks/confirmation.py --repeats 3
# --seconds 18` read the ratio between two configs with CVs of 0.7-5.0% across repeats
# (0.35-1.29% in one kept child, 0.71-1.76% in the parent's process), and the order of
# the four configs in 1 of 3 repeats: each new process draws its sessions' speeds again.
# Nor two kept children taking turns a round each: what persists through one child's
# rounds belongs to the minutes, not the process (AMD EPYC Zen 3, `confirmation.py
# --repeats 10 --seconds 36 --methods round_robin_child,round_robin_children`: the two
# children's rounds of the same minutes differed by no offset of their own for 3 of 4
# configs, 1.5% for the fourth, and the ratios spread with CVs of 1.10-2.35% against
# 1.20-1.88% in one child).
FRESH_PROCESS = True
# Each candidate also timed directly against the next DIRECT_SPAN candidates in rank, in the
# same rounds, each speedup solved from all the round's pairs (`search.pair_graph`). AMD EPYC
# Zen 3 (AVX2), `benchmarks/confirmation.py --repeats 10 --seconds 36 --methods
# round_robin_child,round_robin_direct`: the ratio between two configs spread with CVs of
# 0.79-1.26% across repeats, against 1.34-2.58% timed against fp32 alone in the same run.
DIRECT_SPAN = 3

ROUNDS_PER_PASS = 6  # each candidate timed in 6 rounds: 6 blocks, each in other minutes
MAX_PASSES = 3  # a pass that moves the frontier is followed by one over the new candidates
MAX_PASS_CONFIGS = 12  # a pass lasts at most 12 candidates' --confirm-seconds
DEFAULT_SECONDS = 36.0  # per candidate and pass, when not given (3x a trial's 12 s)
MAX_COMPLETIONS = 20  # configs scored on every example per call (each re-reads the frontier)


def to_confirm(rows: pd.DataFrame) -> list[int]:
    """Trial numbers of the frontier, of configs within their intervals of it, and of the
    fastest reference config (Optimum's presets), fastest first. The reference rides along
    so the best config's ratio to it is measured in the same rounds
    (`search.results.versus_preset`), not from two trials minutes apart."""
    if rows.empty:
        return []
    points = rows[["accuracy", "speedup"]].to_numpy()
    front = rows.iloc[non_dominated(points)]
    chosen = set(front["trial"])
    for row in rows.itertuples():
        for f in front.itertuples():
            if row.accuracy >= f.accuracy - 1e-12 and row.speedup_high >= f.speedup_low:
                chosen.add(row.trial)
    preset = fastest_preset(rows)
    if preset is not None:
        chosen.add(preset["trial"])
    ranked = rows[rows["trial"].isin(chosen)].sort_values("speedup", ascending=False)
    return [int(t) for t in ranked["trial"]]


def confirmer_elsewhere(study: optuna.Study) -> bool:
    """Whether another live worker finished the study's last trial, so it confirms and this
    one does not. A worker on this host is alive while its pid is; one on another host is
    presumed alive for GRACE_PERIOD after its last trial (no heartbeat is recorded between
    trials), so a study resumed later is confirmed by whoever resumes it. (Optuna stamps
    times in the worker's local time: a host in another time zone reads as long gone, and
    both confirm, as before.)"""
    finished = [
        t
        for t in study.get_trials(deepcopy=False)
        if t.state.is_finished()
        and t.datetime_complete is not None
        and isinstance(t.user_attrs.get("worker_pid"), int)  # claimed by a worker
        and not is_interrupted(t)
    ]
    if not finished:
        return False
    last = max(finished, key=lambda t: (t.datetime_complete, t.number))
    host, pid = last.user_attrs.get("worker_host"), last.user_attrs["worker_pid"]
    if host == HOST:
        return pid != os.getpid() and _pid_alive(pid)
    age = (datetime.now() - last.datetime_complete).total_seconds()  # both local times
    return abs(age) < GRACE_PERIOD


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def confirm_frontier(
    study: optuna.Study,
    evaluator: Evaluator,
    on_round: Callable[[str], None] | None = None,
    limit: int | None = None,
    seconds: float | None = None,
    rounds: int = ROUNDS_PER_PASS,
) -> dict[int, dict]:
    """Re-time what `to_confirm` picks, round-robin, until the frontier read with the new
    blocks is all confirmed (at most MAX_PASSES passes; `limit`, for benchmarks only, keeps
    the fastest `limit` candidates of a pass). `seconds` is each candidate's timing over a
    pass (`pass_slot`); returns each confirmed trial's summary. Does nothing when another
    worker finished the last trial (`confirmer_elsewhere`): that one confirms."""
    if confirmer_elsewhere(study):
        return confirmations(study)
    renew = getattr(evaluator, "renew", None)  # only an evaluator with a child has one
    for number in range(MAX_PASSES):
        candidates = to_confirm(trial_rows(study))[:limit]
        if not candidates or set(candidates) <= _confirmed(study):
            break
        if number == 0 and FRESH_PROCESS and renew is not None:
            renew()
        _run_pass(study, evaluator, candidates, seconds, rounds, on_round)
    return confirmations(study)


def _confirmed(study: optuna.Study) -> set[int]:
    """The candidates of the last pass, if it ran all its rounds (one cut short by a stop
    is run again when the search resumes)."""
    trials, _ = last_pass(study)
    return set(trials) if (study.user_attrs.get(ROUNDS) or {}).get("complete") else set()


def pass_slot(seconds: float | None, candidates: int, rounds: int) -> float:
    """Timing of one candidate in one round: `seconds` per candidate over the pass, the whole
    pass bounded by MAX_PASS_CONFIGS candidates' worth (more candidates share it: each round
    still times all of them, and each timing still reaches its minimum blocks)."""
    per_config = seconds or DEFAULT_SECONDS
    return per_config * min(candidates, MAX_PASS_CONFIGS) / (candidates * rounds)


def confirmation_round(
    evaluator: Evaluator,
    configs: list[QuantConfig],
    r: int,
    seconds: float | None,
    fresh_sessions: bool = FRESH_SESSIONS,
    span: int = DIRECT_SPAN,
) -> list:
    """Round `r` of a round-robin confirmation: every config timed in one run
    (`retime_round`), the turns rotated `r` places so no config always goes first; each
    config's `Speedup` or error message, in `configs`' order (fastest first: `span`, the
    configs each is also timed directly against, counts along it). A run that raises (the
    child died or overran) answers its message for every config: that round times nothing.
    `fresh_sessions`: new sessions each round (`Retiming.retime_round`)."""
    try:
        return evaluator.retime_round(
            configs, seconds=seconds, fresh_sessions=fresh_sessions, span=span, rotate=r
        )
    except TrialError as exc:
        return [str(exc)] * len(configs)


def _run_pass(
    study: optuna.Study,
    evaluator: Evaluator,
    candidates: list[int],
    seconds: float | None,
    rounds: int,
    on_round: Callable[[str], None] | None,
) -> None:
    trials = study.get_trials(deepcopy=False)
    configs = [QuantConfig.from_dict(trials[n].user_attrs["config"]) for n in candidates]
    slot = pass_slot(seconds, len(candidates), rounds)
    logs: list[list[float | None]] = []
    timed: dict[int, list[dict]] = {n: [] for n in candidates}
    errors: dict[int, str] = {}
    try:
        for r in range(rounds):
            if on_round:
                on_round(f"confirming {len(candidates)} configs, round {r + 1}/{rounds}")
            results = confirmation_round(evaluator, configs, r, slot)
            row: list[float | None] = [None] * len(candidates)
            for i, (number, speed) in enumerate(zip(candidates, results, strict=True)):
                if isinstance(speed, str):
                    errors[number] = speed
                    continue
                row[i] = math.log(speed.ratio)
                new = block(speed, "round", round=r, seconds=slot, **worker_id())
                timed[number].append(new)
                add_blocks(study, number, [new])
            logs.append(row)
            done_rounds = {"complete": r == rounds - 1, **worker_id()}
            study.set_user_attr(ROUNDS, {"trials": candidates, "logs": logs, **done_rounds})
    finally:
        evaluator.end_rounds()
    done = confirmations(study)
    for number, blocks in timed.items():
        if not blocks:
            done[number] = {"error": errors.get(number, "not timed"), **worker_id()}
            continue
        p = pool(blocks)
        done[number] = {
            "speedup": p.speedup,
            "low": p.low,
            "high": p.high,
            "loaded": any(b["loaded"] for b in blocks),
            "pairs": sum(b["pairs"] for b in blocks),
            "rounds": len(blocks),
            "seconds": slot * rounds,
            **worker_id(),
        }
    study.set_user_attr(CONFIRMATIONS, {str(k): v for k, v in done.items()})


def complete_frontier(
    study: optuna.Study, evaluator, on_stage: Callable[[str], None] | None = None
) -> list[int]:
    """Score on every example the partly scored configs the frontier may hold (`to_complete`),
    reading the frontier again after each, until none is left; returns the trials completed.
    A config that fails is recorded with its error and keeps its partial metric. Like the
    confirmation, left to the worker that finished the last trial (`confirmer_elsewhere`)."""
    done: list[int] = []
    if confirmer_elsewhere(study):
        return done
    for _ in range(MAX_COMPLETIONS):
        have = completed(study)
        todo = [n for n in to_complete(study, trial_rows(study)) if n not in have]
        if not todo:
            break
        number = todo[0]  # the fastest: completing it may settle the rest
        if on_stage:
            on_stage(f"scoring trial {number} on every example (it may be on the frontier)")
        config = QuantConfig.from_dict(study.trials[number].user_attrs["config"])
        try:
            record = evaluator.rescore(config)
        except TrialError as exc:
            record = {"error": str(exc)}
        study.set_user_attr(f"{COMPLETE_PREFIX}{number}", {**record, **worker_id()})
        done.append(number)
    return done
