"""The report's per-group charts: the sensitivity table (what quantizing each group alone
costs in accuracy), the speed cost of keeping each group fp32 (measured on the fallback
path) and the fallback path (accuracy and speed after each reverted group). Each is drawn
only when the study holds it, so other studies' reports are unchanged."""

from __future__ import annotations

import html
import math

import optuna


def _sensitivity_figure(data: dict):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    rows = [r for r in data.get("rows", []) if math.isfinite(r.get("mse", math.inf))]
    groups = [r["group"] for r in rows]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(
        go.Bar(x=groups, y=[r["mse"] for r in rows], name="output MSE vs fp32 (log)"),
        secondary_y=False,
    )
    if any("metric_drop" in r for r in rows):
        fig.add_trace(
            go.Scatter(
                x=groups,
                y=[100 * r.get("metric_drop", 0.0) for r in rows],
                mode="markers",
                name=f"{data.get('metric', 'metric')} drop (points)",
                marker={"color": "#E45756", "size": 9},
            ),
            secondary_y=True,
        )
    fig.update_yaxes(type="log", title_text="mean squared error of outputs", secondary_y=False)
    fig.update_yaxes(title_text="metric drop (points)", secondary_y=True)
    fig.update_layout(
        title=html.escape(
            f"Cost of quantizing each group alone ({data.get('source')}, "
            f"{data.get('examples')} examples), most costly first"
        ),
        template="plotly_white",
        height=420,
    )
    return fig


def _path_figure(path: list[dict]):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    labels, previous = [], set()
    for step in path:
        groups = set(step["groups"])
        added, removed = sorted(groups - previous), sorted(previous - groups)
        change = ", ".join([*(f"+{g}" for g in added), *(f"-{g}" for g in removed)])
        labels.append(f"#{step['trial']} {step['phase']}: {change or 'base'}")
        previous = groups
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(
        go.Scatter(
            x=labels, y=[s["accuracy"] for s in path], name="accuracy", mode="lines+markers"
        ),
        secondary_y=False,
    )
    fig.add_trace(
        go.Scatter(x=labels, y=[s["speedup"] for s in path], name="speedup", mode="lines+markers"),
        secondary_y=True,
    )
    fig.update_yaxes(title_text="accuracy", secondary_y=False)
    fig.update_yaxes(title_text="speedup (x)", secondary_y=True)
    fig.update_layout(
        title="Fallback path: each step keeps one more group fp32 (+) or quantizes one again (-)",
        template="plotly_white",
        height=420,
    )
    return fig


def _speed_cost_figure(costs: dict[str, dict], order: list[str]):
    import plotly.graph_objects as go

    groups = [g for g in order if g in costs] + sorted(set(costs) - set(order))
    fig = go.Figure(
        go.Bar(
            x=groups,
            y=[100 * (costs[g]["cost"] - 1) for g in groups],
            text=[f"trials {costs[g]['trials'][0]} vs {costs[g]['trials'][1]}" for g in groups],
            name="speed given up when kept fp32 (%)",
        )
    )
    fig.update_yaxes(title_text="speedup lost when kept fp32 (%)")
    fig.update_layout(
        title="Speed cost of keeping each group fp32, measured on the fallback path "
        "(two timed trials that differ by that group alone)",
        template="plotly_white",
        height=380,
    )
    return fig


def group_sections(study: optuna.Study, plotly_on_page: bool = True) -> str:
    """HTML of the sensitivity chart and the fallback path, or "" when the study holds
    neither; the first chart carries plotly's JavaScript unless the page has it."""
    from search.sensitivity import stored
    from search.strategies.fallback import fallback_path, speed_costs

    parts = []
    data = stored(study)
    if data and data.get("rows"):
        parts.append(
            "<h2>Sensitivity per group</h2><p class='note'>Base config: "
            f"{html.escape(str(data.get('base_description', '')))}. Each group quantized "
            "alone, every other group fp32, scored against fp32.</p>"
            + _sensitivity_figure(data).to_html(
                full_html=False, div_id="sensitivity", include_plotlyjs=not plotly_on_page
            )
        )
    path = fallback_path(study)
    costs = speed_costs(path)
    if costs:
        order = [r["group"] for r in (data or {}).get("rows", [])]
        plotly_on_page = plotly_on_page or bool(parts)
        parts.append(
            "<h2>Speed cost per group</h2><p class='note'>How much faster the config was with "
            "the group quantized than with it fp32, all else equal; groups the fallback path "
            "never moved alone were not measured.</p>"
            + _speed_cost_figure(costs, order).to_html(
                full_html=False, div_id="speed-cost", include_plotlyjs=not plotly_on_page
            )
        )
    if path:
        plotly_on_page = plotly_on_page or bool(parts)
        parts.append(
            "<h2>Fallback path</h2>"
            + _path_figure(path).to_html(
                full_html=False, div_id="fallback-path", include_plotlyjs=not plotly_on_page
            )
        )
    return "\n".join(parts)
