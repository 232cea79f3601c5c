"""The study as tables: one row per evaluated config, the Pareto frontier, the failures.

Pure functions of the study (pandas frames), so `qsearch show`, the report, confirmation and
the tests all read the same numbers.
"""

from __future__ import annotations

import optuna
import pandas as pd
from optuna.trial import TrialState

from search.ranking import non_dominated
from search.stats import tie_groups
from search.trial_kind import PRUNE_EVIDENCE, REFERENCE, TrialKind, is_measured, trial_kind, why
from search.worker import describe_worker

# Study user attribute holding the frontier's re-measurements (search.confirm writes it).
CONFIRMATIONS = "confirmations"


def confirmations(study: optuna.Study) -> dict[int, dict]:
    return {int(k): v for k, v in (study.user_attrs.get(CONFIRMATIONS) or {}).items()}


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
    "loaded",
    "acc_diff_low",
    "acc_diff_high",
]


def trial_rows(study: optuna.Study, confirmed: bool = True) -> pd.DataFrame:
    """One row per evaluated config (duplicates left out), in trial order. With `confirmed`,
    a config re-measured at the end of the search shows its confirmation's speedup."""
    checks = confirmations(study) if confirmed else {}
    rows = []
    for t in study.get_trials(deepcopy=False, states=[TrialState.COMPLETE]):
        a = t.user_attrs
        if not is_measured(t):
            continue
        fp32 = a.get("accuracy_fp32", study.user_attrs.get("fp32_accuracy", float("nan")))
        check = checks.get(t.number) or {}
        ok = "speedup" in check
        rows.append(
            {
                "trial": t.number,
                "accuracy": t.values[0],
                "drop_points": round(100 * (fp32 - t.values[0]), 2),
                "speedup": check["speedup"] if ok else t.values[1],
                "speedup_low": check["low"] if ok else a.get("speedup_low", t.values[1]),
                "speedup_high": check["high"] if ok else a.get("speedup_high", t.values[1]),
                "first_speedup": t.values[1],
                "confirmed": ok,
                "loaded": bool(a.get("loaded", False) or check.get("loaded", False)),
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
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def pareto_rows(study: optuna.Study) -> pd.DataFrame:
    """Exactly the non-dominated evaluated configs, fastest first."""
    rows = trial_rows(study)
    if rows.empty:
        return rows
    front = non_dominated(rows[["accuracy", "speedup"]].to_numpy())
    out = rows.iloc[front].sort_values("speedup", ascending=False).reset_index(drop=True)
    groups = tie_groups(
        list(zip(out["speedup"], out["speedup_low"], out["speedup_high"], strict=True))
    )
    sizes = pd.Series(groups).value_counts()
    out["tie"] = [f"tie {g + 1}" if sizes[g] > 1 else "" for g in groups]
    return out


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
