"""The study as tables: one row per evaluated config, the Pareto frontier, the failures.

Pure functions of the study (pandas frames), so `qsearch show`, the report, confirmation and
the tests all read the same numbers.
"""

from __future__ import annotations

import optuna
import pandas as pd
from optuna.trial import TrialState

from search.completion import completed
from search.drift import DriftFloor, study_floor
from search.pooled import (
    Pooled,
    last_pass,
    pool,
    relevel,
    resolution,
    same_round_interval,
    stored_blocks,
    tie_groups_by_rounds,
    trial_block,
)
from search.ranking import non_dominated, within_drop
from search.trial_kind import PRUNE_EVIDENCE, REFERENCE, TrialKind, is_measured, trial_kind, why
from search.worker import describe_worker

# Study user attribute holding the frontier's re-measurements (search.confirm writes it).
CONFIRMATIONS = "confirmations"


def confirmations(study: optuna.Study) -> dict[int, dict]:
    """Each confirmed trial's last confirmation, summed over its rounds (speedup, low, high,
    loaded, pairs, seconds, rounds, worker)."""
    return {int(k): v for k, v in (study.user_attrs.get(CONFIRMATIONS) or {}).items()}


def extra_blocks(study: optuna.Study) -> dict[int, list[dict]]:
    """Each trial's timed blocks after its own; a study confirmed before blocks were stored
    has its one confirmation as a block."""
    blocks = stored_blocks(study)
    for number, check in confirmations(study).items():
        if number not in blocks and "speedup" in check:
            blocks[number] = [{"source": "round", **check}]
    return blocks


COLUMNS = [
    "trial",
    "accuracy",
    "drop_points",
    "speedup",
    "speedup_low",
    "speedup_high",
    "options_speedup",
    "size_mb",
    "mode",
    "config",
    "reference",
    "beam_round",
    "cpu",
    "seconds",
    "key",
    "first_speedup",
    "confirmed",
    "blocks",
    "loaded",
    "acc_diff_low",
    "acc_diff_high",
    "scored_on",
]


def pooled_speeds(study: optuna.Study, trials=None, extra=None) -> dict[int, Pooled]:
    """Each measured trial's pooled speedup (`search.pooled`): its trial, confirmation rounds
    and `measure` runs, the last confirmation pass's candidates placed by their same-round
    ratios. The one place speed is read from: every view asks this."""
    extra = extra_blocks(study) if extra is None else extra
    floor = drift_floor(study, extra).floor
    out = {}
    for t in trials if trials is not None else _measured(study):
        blocks = [trial_block(t)] + [b for b in extra.get(t.number, []) if "speedup" in b]
        out[t.number] = pool(blocks, floor)
    passed, logs = last_pass(study)
    return relevel(out, passed, logs)


def drift_floor(study: optuna.Study, extra=None) -> DriftFloor:
    """The narrowest pooled interval in this study (`search.drift`): read from every measured
    trial's confirmation passes, whichever trials a view shows, so every view widens alike."""
    extra = extra_blocks(study) if extra is None else extra
    return study_floor({t.number: extra.get(t.number, []) for t in _measured(study)})


def floor_line(study: optuna.Study) -> str:
    """How precise the speedups are, in words, for every view that shows intervals: the drift
    floor, and how closely the last confirmation pass told its candidates apart (why the
    frontier's ties are ties, and what it would take to break them)."""
    text = f"Narrowest speedup interval (the drift floor): {drift_floor(study).describe()}."
    told = resolution(*last_pass(study))
    if told is not None:
        half, rounds = told
        text += (
            f" The last confirmation pass ({rounds} rounds) knew the ratio between two of its "
            f"configs to +-{100 * half:.1f}% (95%, the median over its pairs of configs): "
            "configs closer than that tie, and a confirmation about 4x as long "
            "(--confirm-seconds) would roughly halve it."
        )
    return text


def _measured(study: optuna.Study) -> list:
    return [
        t for t in study.get_trials(deepcopy=False, states=[TrialState.COMPLETE]) if is_measured(t)
    ]


def trial_rows(study: optuna.Study, confirmed: bool = True) -> pd.DataFrame:
    """One row per evaluated config (duplicates left out), in trial order, its speedup the
    pooled one (`pooled_speeds`); without `confirmed`, the trial's own measurement."""
    trials = _measured(study)
    extra = extra_blocks(study) if confirmed else {}
    speeds = pooled_speeds(study, trials, extra) if confirmed else {}
    whole = completed(study)
    rows = []
    for t in trials:
        # a partly scored trial completed on every example (`search.completion`) reads as one
        # scored in full: its metric and paired difference are the completion's
        done = whole.get(t.number) or {}
        a = t.user_attrs | {k: v for k, v in done.items() if k.startswith("accuracy_diff")}
        accuracy = done.get("accuracy", t.values[0])
        fp32 = a.get("accuracy_fp32", study.user_attrs.get("fp32_accuracy", float("nan")))
        own = trial_block(t)
        speed = speeds.get(t.number) or Pooled(own["speedup"], own["low"], own["high"], 1)
        blocks = extra.get(t.number, [])
        rows.append(
            {
                "trial": t.number,
                "accuracy": accuracy,
                "drop_points": round(100 * (fp32 - accuracy), 2),
                "speedup": speed.speedup,
                "speedup_low": speed.low,
                "speedup_high": speed.high,
                "first_speedup": t.values[1],
                "confirmed": any(b.get("source") == "round" and "speedup" in b for b in blocks),
                "blocks": speed.blocks,
                "loaded": bool(a.get("loaded", False) or any(b.get("loaded") for b in blocks)),
                "acc_diff_low": 100 * a["accuracy_diff_low"] if "accuracy_diff_low" in a else None,
                "acc_diff_high": (
                    100 * a["accuracy_diff_high"] if "accuracy_diff_high" in a else None
                ),
                "options_speedup": a.get("fp32_options_speedup", 1.0),
                "size_mb": a.get("model_size_mb"),
                "mode": (a.get("config") or {}).get("mode", ""),
                "config": a.get("description", ""),
                "reference": a.get(REFERENCE) or "",
                "beam_round": a.get("beam_round"),
                "cpu": describe_worker(a.get("worker") or {}),
                "seconds": a.get("wall_seconds"),
                "key": a.get("config_key", ""),
                # examples its accuracy is the mean of, where scoring stopped early
                # (`search.early`) and was not completed; None: every example
                "scored_on": None if "accuracy" in done else a.get("accuracy_examples"),
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def pareto_rows(study: optuna.Study) -> pd.DataFrame:
    """Exactly the non-dominated evaluated configs by pooled speedup, fastest first: THE
    frontier (the report, `show`, `export --best`, the progress bar and the dashboard's note
    all read it). Two configs tie when their ratio measured in the same confirmation rounds
    does not tell them apart (drift cancels there); without such rounds, when their
    intervals overlap."""
    rows = trial_rows(study)
    if rows.empty:
        return rows.assign(tie=pd.Series(dtype=str))
    front = non_dominated(rows[["accuracy", "speedup"]].to_numpy())
    out = rows.iloc[front].sort_values("speedup", ascending=False).reset_index(drop=True)
    passed, logs = last_pass(study)
    spans = {
        int(r.trial): (r.speedup_low, r.speedup_high)
        for r in out[["trial", "speedup_low", "speedup_high"]].itertuples()
    }
    groups = tie_groups_by_rounds([int(n) for n in out["trial"]], spans, passed, logs)
    sizes = pd.Series(groups).value_counts()
    out["tie"] = [f"tie {g + 1}" if sizes[g] > 1 else "" for g in groups]
    return out


def best_row(study: optuna.Study, max_drop: float) -> pd.Series | None:
    """The fastest frontier config within `max_drop` of fp32 (None if there is none): the
    one best config every view names."""
    front = pareto_rows(study)
    fp32 = study.user_attrs.get("fp32_accuracy")
    if front.empty:
        return None
    if fp32 is not None:
        front = front[within_drop(front["accuracy"], fp32, max_drop)]
    return None if front.empty else front.iloc[0]


# What the failures table lists: trials that measured nothing (copies are left out).
NOT_ANSWERED = (TrialKind.FAILED, TrialKind.INVALID, TrialKind.PRUNED, TrialKind.INTERRUPTED)

PRUNED_COLUMNS = ["trial", "config", "seen", "total", "so_far", "ceiling", "threshold", "bound"]


def pruned_rows(study: optuna.Study) -> pd.DataFrame:
    """Configs answered early as hopeless, with the evidence: examples seen, the metric on
    them, the bound on the whole set and the threshold it fell below."""
    rows = []
    for t in study.get_trials(deepcopy=False, states=[TrialState.PRUNED]):
        if trial_kind(t) != TrialKind.PRUNED:
            continue
        a, evidence = t.user_attrs, t.user_attrs[PRUNE_EVIDENCE]
        rows.append(
            {
                "trial": t.number,
                "config": a.get("description", ""),
                "seen": evidence.get("examples_seen"),
                "total": evidence.get("examples_total"),
                "so_far": evidence.get("metric_so_far"),
                "ceiling": evidence.get("metric_ceiling"),
                "threshold": evidence.get("threshold"),
                "bound": evidence.get("bound", ""),
            }
        )
    return pd.DataFrame(rows, columns=PRUNED_COLUMNS)


def failed_rows(study: optuna.Study) -> pd.DataFrame:
    """Failed trials, and pruned ones (invalid combinations, hopeless configs), with why."""
    rows = []
    for t in study.get_trials(deepcopy=False, states=[TrialState.FAIL, TrialState.PRUNED]):
        if trial_kind(t) not in NOT_ANSWERED:
            continue
        rows.append(
            {
                "trial": t.number,
                "state": t.state.name,
                "config": t.user_attrs.get("description", ""),
                "reason": why(t),
            }
        )
    return pd.DataFrame(rows, columns=["trial", "state", "config", "reason"])


def speed_caveat(best: pd.Series) -> str:
    """What to say beside a best config whose speedup interval reaches 1.0x: on a CPU whose
    int8 GEMMs gain little (an AMD EPYC Zen 1, AVX2 on 128-bit units, read 0.94-1.08x for
    every config of the default task), the fastest config is not shown to beat fp32, and
    shipping the fp32 model is as good an answer. Empty when the interval is above 1."""
    if best["speedup_low"] > 1.0:
        return ""
    return (
        f"not clearly faster than fp32 where it was measured (its interval reaches "
        f"{best['speedup_low']:.3f}x): the fp32 model is as good a choice there"
    )


def fastest_preset(rows: pd.DataFrame) -> pd.Series | None:
    """The fastest reference config (Optimum's presets) among `trial_rows`, if any: what the
    confirmation re-times beside the frontier and the views compare the best config with."""
    if rows.empty or "reference" not in rows:
        return None
    presets = rows[rows["reference"] != ""]
    return None if presets.empty else presets.sort_values("speedup").iloc[-1]


def versus_preset(study: optuna.Study, max_drop: float) -> str | None:
    """The best config within `max_drop` against the fastest of Optimum's presets, in words:
    what a user of Optimum gains by searching. From the rounds of the last confirmation
    pass that timed both (it re-times the fastest preset with the frontier for this), else
    from their pooled speedups, said to be measured apart. None without a preset trial."""
    best, preset = best_row(study, max_drop), fastest_preset(trial_rows(study))
    if best is None or preset is None:
        return None
    if best["reference"]:
        return f"The best config is Optimum's preset itself ({best['reference']}): none faster."
    same = same_round_interval(*last_pass(study), int(best["trial"]), int(preset["trial"]))
    if same is not None:
        ratio, low, high = same
        how = f" ({low:.3f}-{high:.3f}), timed in the same confirmation rounds"
    else:
        ratio = best["speedup"] / preset["speedup"]
        how = ", their speedups measured apart (no confirmation round timed both)"
    return (
        f"Against Optimum's fastest preset ({preset['reference']}, trial {preset['trial']}, "
        f"{preset['speedup']:.3f}x) the best config is {ratio:.3f}x as fast{how}."
    )


def describe_best(study: optuna.Study, max_drop: float) -> str:
    """The best config in words, as the report and the dashboard's note give it."""
    best = best_row(study, max_drop)
    bar = f"within {100 * max_drop:g} point(s) of fp32"
    if best is None:
        return f"No config {bar}."
    caveat = speed_caveat(best)
    return (
        f"Best {bar}: trial {best['trial']}, {best['speedup']:.3f}x "
        f"({best['speedup_low']:.3f}-{best['speedup_high']:.3f}), {best['config']}"
        + (f"; {caveat}." if caveat else "")
    )
