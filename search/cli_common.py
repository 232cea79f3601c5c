"""What every `qsearch` command shares: the Typer app, common options and the one error
boundary (`user_errors`: a `QsearchError` prints one message and exits with code 2, never a
traceback)."""

from __future__ import annotations

import contextlib
import os

import rich.markup
import typer
from rich.console import Console

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
err = Console(stderr=True)

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


def _opt(flag: str, help: str, default_text: str | None = None):
    """An option left unset (None) unless given, so a study file's value can stand."""
    return typer.Option(None, flag, help=help, show_default=default_text or False)
