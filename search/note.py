"""The pooled frontier as the study's note, where optuna-dashboard shows it.

The dashboard draws its own Pareto front from the trials' values (each config's first,
trial-time measurement), which can differ from qsearch's frontier of pooled speedups
(`search.results.pareto_rows`). The note puts qsearch's frontier, and the best config the
report, `show` and `export --best` name, in the dashboard next to it.
"""

from __future__ import annotations

import optuna

from search.results import describe_best, floor_line, pareto_rows, versus_preset


def frontier_note(study: optuna.Study, max_drop: float) -> str:
    """Markdown: the best config within `max_drop`, then the frontier table."""
    front = pareto_rows(study)
    lines = ["## qsearch frontier (pooled speedups)", "", describe_best(study, max_drop)]
    gain = versus_preset(study, max_drop)
    if gain:
        lines += ["", gain]
    lines += [
        "",
        "Speedups pool every timed block of a config (its trial, the end-of-search "
        "confirmation rounds, `qsearch measure` runs); the trials' values, which the "
        "dashboard's own Pareto front and `optuna best-trials` show, are the first "
        "measurement only. " + floor_line(study),
        "",
        "| trial | accuracy | vs fp32 (pts) | speedup | 95% interval | blocks | tie | config |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in front.itertuples():
        lines.append(
            f"| {row.trial} | {row.accuracy:.4f} | {-row.drop_points:+.2f} | "
            f"{row.speedup:.3f}x | {row.speedup_low:.3f}-{row.speedup_high:.3f} | "
            f"{row.blocks} | {row.tie} | {row.config.replace('|', '/')} |"
        )
    return "\n".join(lines) + "\n"


def save_frontier_note(study: optuna.Study, max_drop: float) -> bool:
    """Write `frontier_note` as the study's note (optuna-dashboard's note API); whether it
    was written. optuna-dashboard is an optional extra: without it there is no note to
    write, and `qsearch dashboard` (which needs it) writes the note before it serves."""
    try:
        from optuna_dashboard import save_note
    except ImportError:
        return False
    save_note(study, frontier_note(study, max_drop))
    return True
