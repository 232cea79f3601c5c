"""`qsearch cache`: what qsearch keeps under `$QSEARCH_HOME`, and clearing it (`search.caches`)."""

from __future__ import annotations

import typer
from rich.table import Table

from search.cli_common import app, user_errors
from search.display import console


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"  # pragma: no cover


@app.command()
def cache(
    clear: list[str] = typer.Option(
        None,
        "--clear",
        help="Remove a cache by name (repeat for several; `all`: every one). Everything is "
        "rebuilt on demand, at the cost of the time it took. Not while a search runs.",
    ),
) -> None:
    """List what qsearch keeps under $QSEARCH_HOME (default ~/.cache/qsearch): each cache,
    what it holds, its files and size; --clear NAME removes one."""
    from search.caches import caches
    from search.caches import clear as clear_caches
    from search.tasks.default import qsearch_home

    with user_errors():
        if clear:
            for entry, size in clear_caches(clear):
                console.print(f"cleared {entry.name} ({_size(size)}): {entry.path}")
            return
        table = Table(title=f"Caches under {qsearch_home()}")
        for column in ("cache", "holds", "files", "size"):
            table.add_column(column, justify="right" if column in ("files", "size") else "left")
        total = 0
        for entry in caches():
            size = entry.size()
            total += size
            table.add_row(entry.name, entry.holds, str(len(entry.files())), _size(size))
        table.add_row("all", "", "", _size(total))
        console.print(table)
