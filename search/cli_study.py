"""Commands that read what a search left: show, report, export, measure, dashboard, and
the spaces commands."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from search.cli_common import StorageOpt, app, spaces_app, user_errors
from search.display import console, print_frontier
from search.errors import QsearchError

MaxDropOpt = typer.Option(
    None,
    "--max-drop",
    show_default="the study's own, from the run",
    help="Accepted metric drop from fp32 (0.01 = 1 point).",
)


@app.command()
def show(
    study: str = typer.Option(..., "--study", help="Study name."),
    storage: str = StorageOpt,
    max_drop: float = MaxDropOpt,
) -> None:
    """Print a study's Pareto frontier as a terminal table, and its fastest config within
    --max-drop of fp32."""
    from search.settings import study_max_drop
    from search.study import load_study

    with user_errors():
        loaded = load_study(study, storage)
        print_frontier(loaded, study_max_drop(loaded, max_drop))


@app.command()
def report(
    study: str = typer.Option(..., "--study", help="Study name."),
    storage: str = StorageOpt,
    out: Path = typer.Option(None, "--out", help="Output file (default reports/<study>.html)."),
    max_drop: float = MaxDropOpt,
) -> None:
    """Write the self-contained HTML report of a study (opens offline in any browser).

    The name of a run at several thread counts (`run --threads 1,2 --study S`) writes the
    page with one frontier per count, from its studies S-t1, S-t2, ..."""
    from search.report import write_report
    from search.settings import study_max_drop
    from search.study import load_study, load_thread_group

    with user_errors():
        target = out or Path("reports") / f"{study}.html"
        group = load_thread_group(study, storage)
        if group:
            from search.report_threads import write_thread_report

            drop = study_max_drop(group[0], max_drop)
            path = write_thread_report(group, target, drop)
        else:
            loaded = load_study(study, storage)
            path = write_report(loaded, target, study_max_drop(loaded, max_drop))
        console.print(f"Report: {path}")


@app.command()
def export(
    study: str = typer.Option(..., "--study", help="Study name."),
    trial: int = typer.Option(None, "--trial", help="Trial number to export."),
    best: bool = typer.Option(
        False, "--best", help="Export the fastest trial within --max-drop of fp32."
    ),
    max_drop: float = MaxDropOpt,
    out: Path = typer.Option(None, "--out", help="Folder (default exports/<study>-trial<N>)."),
    storage: str = StorageOpt,
    force: bool = typer.Option(False, "--force", help="Replace an existing folder."),
) -> None:
    """Write a trial's quantized model as a folder Optimum loads, with its tokenizer,
    ORTConfig, session options and a model card; the metric is re-measured on export."""
    from search.export import choose_trial, export_trial
    from search.quantize import quiet_libraries
    from search.results import speed_caveat, trial_rows
    from search.settings import study_max_drop, task_for_study
    from search.study import load_study

    with user_errors():
        loaded = load_study(study, storage)
        chosen = choose_trial(loaded, trial, best, study_max_drop(loaded, max_drop))
        quiet_libraries()
        task = task_for_study(loaded)
        target = out or Path("exports") / f"{study}-trial{chosen.number}"
        result = export_trial(loaded, chosen, task, target, force=force)
        console.print(
            f"Exported trial {result.trial} to {result.path}: {task.metric} "
            f"{result.measured:.4f} re-measured (recorded {result.recorded:.4f})."
        )
        rows = trial_rows(loaded).set_index("trial")
        caveat = speed_caveat(rows.loc[chosen.number]) if chosen.number in rows.index else ""
        if caveat:
            console.print(f"[yellow]Trial {chosen.number} is {caveat}.[/]")


@app.command()
def measure(
    study: str = typer.Option(None, "--study", help="Study of the trial (and of the task)."),
    trial: int = typer.Option(None, "--trial", help="Trial number to re-measure."),
    config: Path = typer.Option(
        None,
        "--config",
        help="A config as JSON (a trial's `config` "
        "attribute, or QuantConfig.to_json()); on the default task "
        "unless --study is given.",
    ),
    storage: str = StorageOpt,
    seconds: float = typer.Option(12.0, "--seconds", help="Most interleaved timing."),
    threads: int = typer.Option(1, "--threads", help="onnxruntime intra-op threads."),
    objective: str = typer.Option("throughput", "--objective", help="throughput or latency."),
    as_json: bool = typer.Option(False, "--json", help="Print one machine-readable line."),
) -> None:
    """Re-measure the speedup of one config over fp32 on this machine, with its interval."""

    from search.config import QuantConfig
    from search.errors import ConfigError
    from search.export import choose_trial
    from search.measure import OBJECTIVES, TimingSettings
    from search.objective import Evaluator
    from search.quantize import quiet_libraries
    from search.settings import task_for_study
    from search.study import load_study
    from search.tasks.default import default_task

    with user_errors():
        if objective not in OBJECTIVES:
            raise QsearchError(
                f"--objective must be one of {', '.join(OBJECTIVES)}, but got {objective!r}"
            )
        if (trial is None) == (config is None):
            raise QsearchError("measure needs either --study NAME --trial N, or --config FILE")
        loaded = load_study(study, storage) if study else None
        source = None
        if trial is not None:
            if loaded is None:
                raise QsearchError("--trial needs --study")
            source = choose_trial(loaded, trial, False)
            chosen = QuantConfig.from_dict(source.user_attrs["config"])
        else:
            try:
                chosen = QuantConfig.from_dict(json.loads(Path(config).read_text()))
            except (OSError, json.JSONDecodeError, TypeError) as exc:
                raise ConfigError(
                    f"--config `{config}` must be a JSON config file: {exc}"
                ) from None
        quiet_libraries()
        task = task_for_study(loaded) if loaded else default_task()
        timing = TimingSettings(seconds=seconds, threads=threads, objective=objective)
        evaluator = Evaluator(task, timing)
        try:
            speed = evaluator.retime(chosen)
        except Exception as exc:  # noqa: BLE001 - one config failing is the answer here
            raise QsearchError(f"the config failed: {exc}") from None
        finally:
            evaluator.close()
        stored = None
        if source is not None:
            stored = store_measurement(loaded, source, speed, threads, objective)
        if as_json:
            print(json.dumps({"config": chosen.to_dict(), "task": task.name, **speed.to_dict()}))
            return
        console.print(
            f"{chosen.describe()}\n{objective} speedup {speed.ratio:.3f}x "
            f"(95% interval {speed.low:.3f}-{speed.high:.3f}, {speed.pairs} pairs in "
            f"{speed.blocks} blocks, stopped at {speed.stopped}); fp32 "
            f"{speed.baseline_sps:.1f} samples/s, candidate {speed.candidate_sps:.1f} samples/s"
            + ("; [yellow]measured under load[/]" if speed.loaded else "")
        )
        if stored is not None:
            console.print(stored)


def store_measurement(study, trial, speed, threads: int, objective: str) -> str:
    """Store a `measure` run of a study's trial back into the study, as one more timed block
    of its pooled speedup (and refresh the dashboard's note), when it measured the same
    thing: same CPU model, threads and objective as the trial. Says what it did."""
    from search.liveness import worker_id
    from search.note import save_frontier_note
    from search.pooled import add_blocks, block
    from search.results import pooled_speeds
    from search.settings import study_max_drop
    from search.worker import worker_info

    recorded = trial.user_attrs.get("worker") or {}
    settings = study.user_attrs.get("settings") or {}
    here = worker_info(threads)
    if (
        recorded.get("cpu"),
        recorded.get("threads", 1),
        settings.get("objective", "throughput"),
    ) != (
        here["cpu"],
        threads,
        objective,
    ):
        return (
            "Not stored in the study: it times another CPU, thread count or objective than "
            f"trial {trial.number} did."
        )
    add_blocks(study, trial.number, [block(speed, "measure", seconds=speed.seconds, **worker_id())])
    save_frontier_note(study, study_max_drop(study))
    pooled = pooled_speeds(study)[trial.number]
    return (
        f"Stored in the study: trial {trial.number} now pools {pooled.blocks} timed blocks, "
        f"{pooled.speedup:.3f}x ({pooled.low:.3f}-{pooled.high:.3f})."
    )


@app.command()
def dashboard(
    study: str = typer.Option(..., "--study", help="Study name."),
    storage: str = StorageOpt,
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to listen on (loopback by default)."
    ),
    port: int = typer.Option(8080, "--port", help="Port."),
) -> None:
    """Open a study in optuna-dashboard (serves until Ctrl-C)."""
    from search.study import load_study

    with user_errors():
        loaded = load_study(study, storage)
        try:
            import optuna_dashboard
        except ImportError:
            raise QsearchError(
                "the dashboard needs optuna-dashboard: pip install 'qsearch[dashboard]'"
            ) from None
        from search.note import save_frontier_note
        from search.settings import study_max_drop

        save_frontier_note(loaded, study_max_drop(loaded))  # qsearch's frontier, as its note
        console.print(f"optuna-dashboard for study {study!r}: http://{host}:{port}/")
        optuna_dashboard.run_server(loaded._storage, host=host, port=port)


@spaces_app.command("list")
def spaces_list() -> None:
    """List the shipped search spaces and whether each is valid."""
    from search.space import SearchSpace, shipped_spaces

    table = Table(title="Shipped search spaces")
    for column in ("name", "file", "description"):
        table.add_column(column, overflow="fold")
    for path in shipped_spaces():
        try:
            s = SearchSpace.from_file(path)
            table.add_row(s.name, str(path), s.description)
        except QsearchError as exc:
            table.add_row(path.stem, str(path), f"[red]invalid: {exc}[/]")
    console.print(table)


@spaces_app.command("validate")
def spaces_validate(files: list[Path] = typer.Argument(..., help="Space TOML files.")) -> None:
    """Check space files; exits 2 at the first invalid one, naming the key at fault."""
    from search.space import SearchSpace

    with user_errors():
        for path in files:
            s = SearchSpace.from_file(path)
            ops = {
                "auto": "auto (the model's compute operators)",
                "all": "all (every quantizable operator in the model)",
            }.get(s.operators_rule, ", ".join(s.operators or ()))
            console.print(f"[green]ok[/] {path}: space {s.name!r}, operators {ops}")
