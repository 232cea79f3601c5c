"""Writing what users read (reports, exports, built tasks, cached ranges) all at once.

A file is written to a temporary name beside its target and renamed over it, a folder is
filled under a temporary name and renamed into place: a crash never leaves half of one. The
temporary file or folder is created with the permissions `open()` or `mkdir()` would give it
(0666 or 0777 less the umask), not `tempfile`'s private 0600/0700, which the rename would
carry over and which would make a report served by a web server, or an export on a shared
folder, unreadable to everyone else.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

_ATTEMPTS = 100


def _create(parent: Path, prefix: str, suffix: str, make: Callable[[Path], Any]) -> Any:
    """`make(path)` on a fresh random name in `parent` (it must fail if the name exists)."""
    for _ in range(_ATTEMPTS):
        path = parent / f"{prefix}{secrets.token_hex(4)}{suffix}"
        try:
            return make(path)
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name `{prefix}*{suffix}` in {parent}")


@contextlib.contextmanager
def atomic_write(path: Path | str, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """A file object to write `path` with: what is written replaces `path` at once when the
    block ends (readers see the old file or the whole new one); on an error it is removed.
    `mode` is "w" (text, `encoding`) or "wb"."""
    if mode not in ("w", "wb"):
        raise ValueError(f"`mode` must be 'w' or 'wb', but got {mode!r}")
    path = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)

    def make(candidate: Path) -> tuple[Path, int]:
        return candidate, os.open(candidate, flags, 0o666)  # the umask applies, as in open()

    tmp, fd = _create(path.parent, f".{path.name}.", ".tmp", make)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # gone already after the rename


def temp_dir(parent: Path | str, prefix: str) -> Path:
    """A new empty folder in `parent` to fill and then rename into place, with the
    permissions `mkdir()` would give (where `tempfile.mkdtemp` makes it 0700)."""
    parent = Path(parent)

    def make(candidate: Path) -> Path:
        candidate.mkdir(0o777)  # the umask applies
        return candidate

    return _create(parent, prefix, "", make)
