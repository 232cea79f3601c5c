"""The HTML report, derived from the study alone (tables from `search.results`).

The HTML embeds plotly's JavaScript and escapes every string taken from the study, so it
opens offline and safely; it is written atomically.
"""

from __future__ import annotations

import html
import itertools
from pathlib import Path

import optuna
import pandas as pd

from search.files import atomic_write
from search.ranking import within_drop
from search.results import (
    PRUNED_COLUMNS,
    describe_best,
    failed_rows,
    floor_line,
    pareto_rows,
    pruned_rows,
    trial_rows,
    versus_preset,
)


def _scatter(study: optuna.Study, rows: pd.DataFrame, front: pd.DataFrame):
    import plotly.graph_objects as go

    fig = go.Figure()
    # Workers with different CPUs get their own marker: their speedups are each measured
    # against fp32 on the same worker, so they are comparable but not identical.
    cpus = sorted(set(rows["cpu"]))
    shapes = ("circle", "square", "triangle-up", "cross", "x", "star-square")
    symbols = {cpu: shapes[i % len(shapes)] for i, cpu in enumerate(cpus)}
    for (mode, color), cpu in itertools.product(
        (("dynamic", "#4C78A8"), ("static", "#F58518")), cpus
    ):
        part = rows[(rows["mode"] == mode) & (rows["reference"] == "") & (rows["cpu"] == cpu)]
        if part.empty:
            continue
        fig.add_trace(
            go.Scatter(
                x=part["speedup"],
                y=part["accuracy"],
                mode="markers",
                name=f"{mode} trials" + (f" on {html.escape(cpu)}" if len(cpus) > 1 else ""),
                marker={
                    "color": color,
                    "size": 8,
                    "opacity": 0.6,
                    "symbol": symbols.get(cpu, "circle"),
                },
                error_x={
                    "type": "data",
                    "symmetric": False,
                    "array": part["speedup_high"] - part["speedup"],
                    "arrayminus": part["speedup"] - part["speedup_low"],
                    "thickness": 1,
                },
                text=[
                    f"#{n}: {html.escape(c)}"
                    for n, c in zip(part["trial"], part["config"], strict=True)
                ],
                hovertemplate="%{text}<br>speedup %{x:.3f}x<br>accuracy %{y:.4f}<extra></extra>",
            )
        )
    refs = rows[rows["reference"] != ""]
    if not refs.empty:
        fig.add_trace(
            go.Scatter(
                x=refs["speedup"],
                y=refs["accuracy"],
                mode="markers+text",
                name="Optimum presets",
                marker={"symbol": "diamond", "size": 12, "color": "#54A24B"},
                text=[html.escape(r.replace("optimum ", "")) for r in refs["reference"]],
                textposition="bottom center",
                hovertemplate="%{text}<br>speedup %{x:.3f}x<br>accuracy %{y:.4f}<extra></extra>",
            )
        )
    if not front.empty:
        ordered = front.sort_values("speedup")
        fig.add_trace(
            go.Scatter(
                x=ordered["speedup"],
                y=ordered["accuracy"],
                mode="lines+markers",
                name="Pareto frontier",
                line={"shape": "hv", "color": "#E45756"},
                marker={"size": 11, "color": "#E45756", "line": {"width": 1, "color": "black"}},
                text=[
                    f"#{n}: {html.escape(c)}"
                    for n, c in zip(ordered["trial"], ordered["config"], strict=True)
                ],
                hovertemplate="%{text}<br>speedup %{x:.3f}x<br>accuracy %{y:.4f}<extra></extra>",
            )
        )
    fp32 = study.user_attrs.get("fp32_accuracy")
    if fp32 is not None:
        fig.add_trace(
            go.Scatter(
                x=[1.0],
                y=[fp32],
                mode="markers+text",
                name="fp32 baseline",
                marker={"symbol": "star", "size": 16, "color": "black"},
                text=["fp32"],
                textposition="top center",
            )
        )
    fig.update_layout(
        title="Accuracy vs speedup over fp32 (same worker, interleaved timing)",
        xaxis_title="speedup over fp32 (x), 95% interval as error bars",
        yaxis_title="accuracy",
        template="plotly_white",
        height=560,
    )
    return fig


def _progress(study: optuna.Study, rows: pd.DataFrame, max_drop: float):
    import plotly.graph_objects as go

    fp32 = study.user_attrs.get("fp32_accuracy", rows["accuracy"].max() if len(rows) else 0)
    ordered = rows.sort_values("trial")
    accurate = within_drop(ordered["accuracy"], fp32, max_drop)
    best = ordered["speedup"].where(accurate).cummax().ffill()
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=ordered["trial"],
            y=ordered["speedup"],
            mode="markers",
            name="speedup of each trial",
            marker={"color": "#9ecae9"},
        )
    )
    fig.add_trace(
        go.Scatter(
            x=ordered["trial"],
            y=best,
            mode="lines",
            line={"shape": "hv"},
            name=f"best speedup within {100 * max_drop:g} point(s) of fp32",
        )
    )
    fig.update_layout(
        title="Search progress",
        xaxis_title="trial",
        yaxis_title="speedup (x)",
        template="plotly_white",
        height=380,
    )
    return fig


def _table(frame: pd.DataFrame, columns: list[str], floats: dict[str, str] | None = None) -> str:
    if frame.empty:
        return "<p><em>none</em></p>"
    shown = frame[columns].copy()
    for column, fmt in (floats or {}).items():
        if column in shown:
            shown[column] = shown[column].map(lambda v, f=fmt: "" if pd.isna(v) else f.format(v))
    return shown.to_html(index=False, escape=True, classes="t", border=0, na_rep="")


def _settings_table(settings: dict) -> str:
    if not settings:
        return "<p><em>not recorded</em></p>"
    rows = [{"setting": k, "value": "" if v is None else str(v)} for k, v in settings.items()]
    return _table(pd.DataFrame(rows), ["setting", "value"])


def render_html(study: optuna.Study, max_drop: float = 0.01) -> str:
    """A self-contained page: frontier chart and table, all trials, failures, environment."""
    rows = trial_rows(study)
    front = pareto_rows(study)
    failed = failed_rows(study)
    pruned = pruned_rows(study)
    attrs = study.user_attrs
    fp32 = attrs.get("fp32_accuracy")
    e = html.escape
    gain = versus_preset(study, max_drop)  # what searching gained over Optimum's presets
    figures = []
    if not rows.empty:
        figures.append(
            _scatter(study, rows, front).to_html(
                full_html=False, div_id="pareto", include_plotlyjs=True
            )
        )
        figures.append(
            _progress(study, rows, max_drop).to_html(
                full_html=False, div_id="progress", include_plotlyjs=False
            )
        )
    from search.report_groups import group_sections

    groups_html = group_sections(study, plotly_on_page=bool(figures))  # sensitivity, fallback
    front = front.assign(
        acc_interval=[
            "" if pd.isna(lo) else f"{lo:+.1f} to {hi:+.1f}"
            for lo, hi in zip(front["acc_diff_low"], front["acc_diff_high"], strict=True)
        ],
        interval=[
            f"{lo:.3f}-{hi:.3f}"
            for lo, hi in zip(front["speedup_low"], front["speedup_high"], strict=True)
        ],
    )
    fmt = {
        "accuracy": "{:.4f}",
        "speedup": "{:.3f}",
        "options_speedup": "{:.3f}",
        "size_mb": "{:.1f}",
        "drop_points": "{:.2f}",
        "seconds": "{:.1f}",
    }
    workers: dict[tuple, dict] = {}
    trial_counts: dict[tuple, int] = {}
    for t in study.get_trials(deepcopy=False):
        w = t.user_attrs.get("worker")
        if w:
            key = (w.get("host"), w.get("cpu"))
            workers[key] = w
            trial_counts[key] = trial_counts.get(key, 0) + 1
    env_rows = "".join(
        f"<tr><td>{e(str(w.get('host')))}</td><td>{e(str(w.get('cpu')))}</td>"
        f"<td>{e(', '.join(w.get('isa') or []) or 'none of AVX2/AVX512/VNNI')}</td>"
        f"<td>{e(str(w.get('cores')))}</td><td>{e(str(w.get('onnxruntime')))}</td>"
        f"<td>{e(str(w.get('threads')))}</td><td>{trial_counts[key]}</td></tr>"
        for key, w in workers.items()
    )
    states = pd.Series([t.state.name for t in study.get_trials(deepcopy=False)]).value_counts()
    counts = ", ".join(f"{n} {s.lower()}" for s, n in states.items())
    task = attrs.get("task", {})
    space_text = attrs.get("space_text", "")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>qsearch report: {e(study.study_name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }}
table.t {{ border-collapse: collapse; font-size: 13px; margin: 0.5em 0 1.5em; }}
table.t th, table.t td {{ padding: 3px 8px; border-bottom: 1px solid #ddd; text-align: left; }}
table.t th {{ background: #f3f3f3; }}
.note {{ color: #555; font-size: 14px; }} pre {{ background: #f7f7f7; padding: 1em; }}
</style></head><body>
<h1>qsearch: {e(study.study_name)}</h1>
<p>Task <b>{e(str(task.get("name", "?")))}</b> ({e(str(task.get("eval_examples", "?")))}
evaluation examples, metric {e(str(task.get("metric", "accuracy")))}{e(_serving(task))}); space
<b>{e(str(attrs.get("space_name", "?")))}</b>; strategy <b>{e(str(attrs.get("strategy", "?")))}</b>;
fp32 {e(str(task.get("metric", "accuracy")))} <b>{"" if fp32 is None else f"{fp32:.4f}"}</b>.
Trials: {e(counts)}.</p>
<p class="note">Speedup is fp32 time over candidate time, both run interleaved on the same
batches on the same worker; the fp32 baseline uses onnxruntime's default session options.
"options speedup" is fp32's own speedup under the candidate's session options, the part of
a gain owed to the options rather than to quantization. "drop_points" is fp32 accuracy minus
the config's, in points (negative: more accurate than fp32 on this evaluation set);
"acc_interval" is the 95% interval of the paired accuracy difference (same examples, in
points). Speedup intervals come from blocks of paired runs and never go below the measured
run-to-run drift. A config's speedup pools all its timed blocks ("blocks": its trial, the
end-of-search confirmation rounds, later `qsearch measure` runs; "first_speedup" is the one
the search saw); "confirmed" configs were re-timed round-robin at the end of the search, and
frontier configs are ties when their ratio measured in the same rounds cannot tell them apart
(without such rounds: when their intervals overlap). "loaded" marks a measurement during which
another process used the CPU (its interval was widened or its loaded blocks dropped).
"scored_on": where scoring costs more than timing (a large model), a config is timed after a
first slice of the evaluation set, and the rest is scored only until the frontier dominates it
at its accuracy's upper bound or its drop is known to be within or beyond --max-drop; its
accuracy is then estimated from the examples seen, this many (empty: every example). Such a
config that the frontier may hold was scored on every example before this report.
{e(floor_line(study))}</p>
{figures[0] if figures else "<p>No finished trials yet.</p>"}
<h2>Pareto frontier ({len(front)} configs)</h2>
<p><b>{e(describe_best(study, max_drop))}</b></p>
{f"<p>{e(gain)}</p>" if gain else ""}
{
        _table(
            front,
            [
                "trial",
                "accuracy",
                "drop_points",
                "acc_interval",
                "speedup",
                "interval",
                "tie",
                "confirmed",
                "blocks",
                "first_speedup",
                "loaded",
                "options_speedup",
                "size_mb",
                "config",
                "reference",
            ],
            {**fmt, "first_speedup": "{:.3f}"},
        )
    }
<h2>Search progress</h2>
{figures[1] if len(figures) > 1 else ""}
{groups_html}
<h2>All evaluated configs ({len(rows)})</h2>
{
        _table(
            rows.sort_values("speedup", ascending=False) if len(rows) else rows,
            [
                "trial",
                "accuracy",
                "drop_points",
                "speedup",
                "speedup_low",
                "speedup_high",
                "options_speedup",
                "size_mb",
                "config",
                "reference",
                "beam_round",
                "seconds",
                "scored_on",
            ],
            {
                **fmt,
                "speedup_low": "{:.3f}",
                "speedup_high": "{:.3f}",
                "beam_round": "{:.0f}",
                "scored_on": "{:.0f}",
            },
        )
    }
<h2>Pruned as hopeless ({len(pruned)})</h2>
<p>Stopped before timing: on the examples seen, the metric's upper bound on the whole
evaluation set fell below the threshold (fp32 minus the prune drop).</p>
{_table(pruned, PRUNED_COLUMNS, {"so_far": "{:.3f}", "ceiling": "{:.3f}", "threshold": "{:.3f}"})}
<h2>Failed and pruned trials ({len(failed)})</h2>
{_table(failed, ["trial", "state", "config", "reason"])}
<h2>Environment</h2>
<table class="t"><tr><th>host</th><th>CPU</th><th>ISA</th><th>cores</th><th>onnxruntime</th>
<th>threads</th><th>trials</th></tr>{env_rows}</table>
<h2>Settings of the last run</h2>
{_settings_table(attrs.get("settings") or {})}
<h2>Search space</h2>
<pre>{e(space_text)}</pre>
</body></html>
"""


def _serving(task: dict) -> str:
    """The output the metric read and the serving shape, as the task recorded them (older
    studies recorded neither)."""
    parts = []
    if task.get("output") is not None:
        pooling = {
            "none": "as it is",
            "mean": "mean-pooled over the attention mask",
            "cls": "first token",
        }.get(task.get("pooling"), str(task.get("pooling")))
        parts.append(f"output {task['output']} {task.get('output_shape', '')}, {pooling}")
    if "max_length" in task:
        padding = "longest in batch" if task.get("padding") == "longest" else "fixed length"
        parts.append(
            f"batch {task.get('batch_size')} (latency {task.get('latency_batch_size', 1)}), "
            f"max length {task['max_length']}, padded to {padding}"
        )
    return "".join(f"; {p}" for p in parts)


def write_report(study: optuna.Study, path: Path, max_drop: float = 0.01) -> Path:
    """Write atomically (temp file, then rename): a crash never leaves half a report."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = render_html(study, max_drop)
    with atomic_write(path) as f:
        f.write(text)
    return path
