"""`qsearch sensitivity`: what quantizing each part of the model alone costs (the table the
fallback strategy reverts groups by, `search.sensitivity`)."""

from __future__ import annotations

import math

import typer
from rich.table import Table

from search.cli_common import StorageOpt, app, user_errors
from search.errors import QsearchError


def _fastest_config(study):
    """The fastest measured config of the study: the base a table is computed for when the
    study holds none (a fallback run stores its own base's)."""
    from search.config import QuantConfig
    from search.strategies.base import records

    measured = [r for r in records(study) if r.values is not None and "config" in r.attrs]
    if not measured:
        raise QsearchError(
            f"study {study.study_name!r} must hold a measured trial to compute the sensitivity "
            f"of (its fastest config), but it holds none; run a search first"
        )
    best = max(measured, key=lambda r: r.values[1])
    return QuantConfig.from_dict(best.attrs["config"])


def _number(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return "inf" if value == math.inf else fmt.format(value)


def sensitivity_table(data: dict) -> Table:
    from search.sensitivity import table_rows

    table = Table(
        title=f"Sensitivity of {data.get('base_description', '?')} ({data.get('source')}, "
        f"{data.get('examples')} evaluation examples, output {data.get('output')})"
    )
    for column in ("rank", "group", "nodes", "output MSE", "agreement", "drop (pts)", "s"):
        if column == "group":
            table.add_column(column, no_wrap=True, min_width=16)
        else:
            table.add_column(column, justify="right")
    for rank, row in enumerate(table_rows(data)):
        drop = row.get("metric_drop")
        table.add_row(
            "" if rank == 0 else str(rank),
            row["group"] + (f" [red](failed: {row['error']})[/]" if row.get("error") else ""),
            "" if rank == 0 else str(row.get("nodes", "")),
            _number(row.get("mse"), "{:.3g}"),
            _number(row.get("agreement"), "{:.3f}"),
            _number(None if drop is None else 100 * drop, "{:+.2f}"),
            _number(row.get("seconds"), "{:.2f}"),
        )
    return table


@app.command()
def sensitivity(
    study: str = typer.Option(..., "--study", help="Study name."),
    storage: str = StorageOpt,
) -> None:
    """Print what quantizing each group of the model alone costs (leave-one-group-in:
    output error and metric drop against fp32 on a quarter of the evaluation set), most
    costly first. A study run with --fallback holds its base config's table; for any other
    study it is computed for its fastest measured config (cached on disk) and stored."""
    from search.display import console
    from search.quantize import quiet_libraries
    from search.sensitivity import compute_sensitivity, store, stored
    from search.settings import task_for_study
    from search.study import load_study

    with user_errors():
        loaded = load_study(study, storage)
        data = stored(loaded)
        if data is None:
            base = _fastest_config(loaded)
            quiet_libraries()
            data = compute_sensitivity(task_for_study(loaded), base)
            store(loaded, data)
        console.print(sensitivity_table(data))
