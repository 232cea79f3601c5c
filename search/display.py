"""What `qsearch` shows while it works: build progress, the trial progress bar with the best
config so far, and the frontier as a terminal table. Kept apart from the commands so the CLI
module stays a thin list of commands."""

from __future__ import annotations

import signal

from rich.console import Console
from rich.table import Table

from search.errors import Terminated

console = Console()


class StageProgress:
    """A bar per build stage (fine-tuning, export, evaluation) for the default task, shown
    from the first stage on (an input refused before the build prints nothing more)."""

    def __enter__(self):
        self._progress = None
        self._bars: dict[str, int] = {}
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def report(self, stage: str, step: int, total: int) -> None:
        if self._progress is None:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TimeElapsedColumn(),
                console=console,
            )
            self._progress.__enter__()
        if stage not in self._bars:
            self._bars[stage] = self._progress.add_task(stage, total=total)
        self._progress.update(self._bars[stage], completed=step)


def announce_build() -> None:
    from search.tasks.default import default_task_dir

    console.print(
        f"Building the default task in {default_task_dir()} (fine-tunes MiniLM-L6 for one "
        "epoch on rotten_tomatoes; minutes, once)."
    )


def search_with_progress(search):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from search.results import best_row, speed_caveat

    stop = {"asked": False}

    def on_sigint(signum, frame):  # first Ctrl-C: finish the current trial, then stop
        if stop["asked"]:
            raise KeyboardInterrupt
        stop["asked"] = True
        console.print("[yellow]Stopping after the current trial (Ctrl-C again to abort).[/]")

    fp32 = search.study.user_attrs["fp32_accuracy"]
    max_drop = search.settings.max_drop

    def best_text() -> str:  # the frontier's best, as show, the report and export name it
        top = best_row(search.study, max_drop)
        if top is None:
            return "best: -"
        same = " (no faster than fp32?)" if speed_caveat(top) else ""
        return f"best {top['speedup']:.2f}x at {100 * (top['accuracy'] - fp32):+.1f} pts{same}"

    def on_sigterm(signum, frame):  # a service manager or `kill`: stop now, keep the study valid
        raise Terminated

    previous = signal.signal(signal.SIGINT, on_sigint)
    previous_term = signal.signal(signal.SIGTERM, on_sigterm)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[best]}"),
        TimeElapsedColumn(),
    )
    try:
        with Progress(*columns, console=console) as progress:
            bar = progress.add_task(
                "trials",
                total=search.settings.budget,
                completed=search.evaluated(),
                best=best_text(),
            )
            return search.run(
                on_trial=lambda study, outcome: progress.update(
                    bar, completed=search.evaluated(), best=best_text()
                ),
                should_stop=lambda: stop["asked"],
                on_stage=lambda stage: progress.update(bar, description=stage),
            )
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGTERM, previous_term)


def print_frontier(study, max_drop: float) -> None:
    """The frontier as a table; its caption names the fastest config within `max_drop`."""
    from search.results import best_row, floor_line, pareto_rows, speed_caveat, versus_preset

    rows = pareto_rows(study)
    fp32 = study.user_attrs.get("fp32_accuracy")
    metric = study.metric_names[0] if study.metric_names else "accuracy"
    caption = None
    if fp32 is not None:
        bar = f"within {100 * max_drop:g} point(s) of fp32 (--max-drop {max_drop:g})"
        top = best_row(study, max_drop)
        caption = f"no config {bar}"
        if top is not None:
            caveat = speed_caveat(top)
            caption = (
                f"fastest {bar}: trial {top['trial']}, {top['speedup']:.3f}x "
                f"({top['speedup_low']:.3f}-{top['speedup_high']:.3f})"
                + (f"; {caveat}" if caveat else "")
            )
    table = Table(
        title=f"Pareto frontier of {study.study_name}"
        + (f" (fp32 {metric} {fp32:.4f})" if fp32 is not None else ""),
        caption=caption,
    )
    columns = ("trial", metric, "vs fp32 (pts)", "speedup", "95% interval", "blocks", "tie")
    for column in (*columns, "config"):
        table.add_column(column, overflow="fold")
    for row in rows.itertuples():
        table.add_row(
            str(row.trial),
            f"{row.accuracy:.4f}",
            f"{-row.drop_points:+.2f}",
            f"{row.speedup:.3f}x",
            f"{row.speedup_low:.3f}-{row.speedup_high:.3f}",
            str(row.blocks),
            row.tie,
            (f"[{row.reference}] " if row.reference else "") + row.config,
        )
    console.print(table)
    gain = versus_preset(study, max_drop)
    if gain:
        console.print(gain)
    if len(rows):
        console.print(floor_line(study), style="dim")


def print_thread_summary(studies, max_drop: float) -> None:
    """The best config at each thread count of a multi-count run, as one table."""
    from search.report_threads import thread_rows

    table = Table(
        title="Best config per thread count (speedup over fp32 at the same count)",
        caption=f"within {100 * max_drop:g} point(s) of fp32 (--max-drop {max_drop:g})",
    )
    columns = ("threads", "study", "fp32 samples/s", "trial", "speedup", "95% interval")
    for column in (*columns, "vs fp32 (pts)", "samples/s", "config"):
        table.add_column(column, overflow="fold")
    for r in thread_rows(studies, max_drop).itertuples():
        found = r.trial is not None
        table.add_row(
            str(r.threads),
            r.study,
            f"{r.fp32_sps:.1f}",
            str(r.trial) if found else "-",
            f"{r.speedup:.3f}x" if found else "-",
            f"{r.speedup_low:.3f}-{r.speedup_high:.3f}" if found else "-",
            f"{r.vs_fp32_points:+.2f}" if found else "-",
            f"{r.int8_sps:.1f}" if found else "-",
            r.config,
        )
    console.print(table)
