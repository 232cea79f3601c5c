"""One page for a run at several thread counts (`qsearch run --threads 1,2`): a frontier per
count, side by side, and the best config at each.

Each count is its own study (`<study>-t<n>`, one storage), because a speedup is a ratio to
fp32 at the same count: 2.1x at one thread and 1.6x at two are both true, and neither frontier
can be read from the other. The page reads the studies alone (`search.results`), so it can be
rebuilt from them at any time.
"""

from __future__ import annotations

import html
from pathlib import Path

import optuna
import pandas as pd

from search.files import atomic_write
from search.results import best_row, pareto_rows, trial_rows

COLORS = ("#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2")


def threads_of(study: optuna.Study) -> int:
    """The thread count a study's speedups were measured at (its stored settings)."""
    threads = (study.user_attrs.get("settings") or {}).get("threads", 1)
    return threads if isinstance(threads, int) else int(threads[0])


def thread_rows(studies: list[optuna.Study], max_drop: float) -> pd.DataFrame:
    """One row per thread count: the best config within `max_drop` (as every view of that
    study names it), and fp32's own throughput there, so the counts compare in samples/s too."""
    rows = []
    for study in studies:
        fp32 = study.user_attrs.get("fp32_accuracy", float("nan"))
        trials = trial_rows(study)
        best = best_row(study, max_drop)
        baseline = [
            t.user_attrs["timing"]["baseline_sps"]
            for t in study.get_trials(deepcopy=False)
            if "baseline_sps" in (t.user_attrs.get("timing") or {})
        ]
        fp32_sps = float(pd.Series(baseline).median()) if baseline else float("nan")
        row = {
            "threads": threads_of(study),
            "study": study.study_name,
            "evaluated": len(trials),
            "frontier": len(pareto_rows(study)),
            "fp32_sps": fp32_sps,
            "trial": None,
            "config": "no config within --max-drop",
            "speedup": float("nan"),
            "speedup_low": float("nan"),
            "speedup_high": float("nan"),
            "vs_fp32_points": float("nan"),
            "int8_sps": float("nan"),
        }
        if best is not None:
            row |= {
                "trial": int(best["trial"]),
                "config": best["config"],
                "speedup": best["speedup"],
                "speedup_low": best["speedup_low"],
                "speedup_high": best["speedup_high"],
                "vs_fp32_points": 100 * (best["accuracy"] - fp32),
                "int8_sps": fp32_sps * best["speedup"],
            }
        rows.append(row)
    return pd.DataFrame(rows)


def _figure(studies: list[optuna.Study]):
    import plotly.graph_objects as go

    fig = go.Figure()
    for i, study in enumerate(studies):
        color = COLORS[i % len(COLORS)]
        threads = threads_of(study)
        rows = trial_rows(study)
        front = pareto_rows(study).sort_values("accuracy")
        fig.add_trace(
            go.Scatter(
                x=rows["speedup"],
                y=rows["accuracy"],
                mode="markers",
                marker={"color": color, "opacity": 0.35, "size": 7},
                name=f"{threads} thread(s): trials",
                text=[
                    f"trial {n}: {c}" for n, c in zip(rows["trial"], rows["config"], strict=True)
                ],
                hovertemplate="%{text}<br>%{x:.3f}x, accuracy %{y:.4f}<extra></extra>",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=front["speedup"],
                y=front["accuracy"],
                mode="lines+markers",
                line={"color": color, "shape": "hv"},
                marker={"color": color, "size": 10},
                error_x={
                    "type": "data",
                    "symmetric": False,
                    "array": front["speedup_high"] - front["speedup"],
                    "arrayminus": front["speedup"] - front["speedup_low"],
                },
                name=f"{threads} thread(s): frontier",
                text=[
                    f"trial {n}: {c}" for n, c in zip(front["trial"], front["config"], strict=True)
                ],
                hovertemplate="%{text}<br>%{x:.3f}x, accuracy %{y:.4f}<extra></extra>",
            )
        )
    fig.update_layout(
        title="Frontier per thread count (speedup over fp32 at the same count, 95% intervals)",
        xaxis_title="speedup over fp32 (pooled)",
        yaxis_title="accuracy",
        template="plotly_white",
        height=520,
    )
    return fig


def render_thread_report(
    studies: list[optuna.Study], max_drop: float, reports: dict[str, str] | None = None
) -> str:
    """The page: the chart, the best config per count, and each count's frontier table;
    `reports` maps a study name to its own full report (linked)."""
    e = html.escape
    reports = reports or {}
    summary = thread_rows(studies, max_drop)
    summary_html = "".join(
        f"<tr><td>{r.threads}</td><td>{e(r.study)}</td><td>{r.evaluated}</td>"
        f"<td>{r.fp32_sps:.1f}</td>"
        + (
            f"<td>{r.trial}</td><td>{r.speedup:.3f}x ({r.speedup_low:.3f}-{r.speedup_high:.3f})"
            f"</td><td>{r.vs_fp32_points:+.2f}</td><td>{r.int8_sps:.1f}</td>"
            if r.trial is not None
            else "<td></td><td></td><td></td><td></td>"
        )
        + f"<td>{e(str(r.config))}</td></tr>"
        for r in summary.itertuples()
    )
    sections = []
    for study in studies:
        front = pareto_rows(study)
        body = "".join(
            f"<tr><td>{int(r.trial)}</td><td>{r.accuracy:.4f}</td><td>{-r.drop_points:+.2f}</td>"
            f"<td>{r.speedup:.3f}x</td><td>{r.speedup_low:.3f}-{r.speedup_high:.3f}</td>"
            f"<td>{r.blocks}</td><td>{e(r.tie)}</td>"
            f"<td>{e(('[' + r.reference + '] ') if r.reference else '')}{e(r.config)}</td></tr>"
            for r in front.itertuples()
        )
        link = reports.get(study.study_name)
        sections.append(
            f"<h2>{threads_of(study)} thread(s): study {e(study.study_name)}</h2>"
            + (f'<p><a href="{e(link)}">full report of this count</a></p>' if link else "")
            + "<table><tr><th>trial</th><th>accuracy</th><th>vs fp32 (pts)</th>"
            "<th>speedup</th><th>95% interval</th><th>blocks</th><th>tie</th><th>config</th>"
            f"</tr>{body}</table>"
        )
    chart = _figure(studies).to_html(full_html=False, div_id="threads", include_plotlyjs=True)
    names = ", ".join(s.study_name for s in studies)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>qsearch report: {e(names)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; max-width: 1200px; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; font-size: 14px; }}
th {{ background: #f3f3f3; }}
</style></head><body>
<h1>Frontier per thread count</h1>
<p>Each count was searched as its own study; a speedup is fp32's time over the config's at
the same thread count, so compare configs within a count, and counts by samples/s.
Best config: the fastest on the count's frontier within {100 * max_drop:g} point(s) of fp32.</p>
<table><tr><th>threads</th><th>study</th><th>evaluated</th><th>fp32 samples/s</th>
<th>best trial</th><th>speedup (95% interval)</th><th>vs fp32 (pts)</th>
<th>best samples/s</th><th>best config</th></tr>{summary_html}</table>
{chart}
{"".join(sections)}
</body></html>
"""


def write_thread_report(
    studies: list[optuna.Study], path: Path, max_drop: float, reports: dict[str, str] | None = None
) -> Path:
    """Write the page atomically: a crash never leaves half a report."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = render_thread_report(studies, max_drop, reports)
    with atomic_write(path) as f:
        f.write(text)
    return path
