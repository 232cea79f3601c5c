"""The `qsearch` command: thin wrappers that parse, call the modules, and print.

Commands live in two modules by what they work on: `cli_run` (prepare and run a search) and
`cli_study` (read a study: show, report, export, measure, dashboard; and spaces), with
`cli_sensitivity` and `cli_cache` beside them. All
register on the one Typer app of `cli_common`, whose `user_errors` is the one error boundary.
"""

from __future__ import annotations

import sys

from search import cli_cache, cli_run, cli_sensitivity, cli_study  # noqa: F401 - registers
from search.cli_common import app, err
from search.errors import Terminated

__all__ = ["app", "main"]


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
