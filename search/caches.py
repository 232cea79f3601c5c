"""What qsearch keeps under `$QSEARCH_HOME` (default `~/.cache/qsearch`), in one list.

Every cache is a folder of the home named here, so `qsearch cache` can say what each holds,
how large it is, and clear it; everything in them is rebuilt on demand (at the cost of the
time it took). A model's derived copies (shape-inferred, attention-fused, smoothed) are each
as large as the model, so on a large model they are what a user looks for first.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from search.errors import QsearchError


@dataclass(frozen=True)
class Cache:
    name: str
    holds: str
    path: Path

    def files(self) -> list[Path]:
        if not self.path.is_dir():
            return []
        return [p for p in self.path.rglob("*") if p.is_file() and not p.is_symlink()]

    def size(self) -> int:
        return sum(p.stat().st_size for p in self.files())


def caches(home: Path | None = None) -> list[Cache]:
    """The caches under `home` (default `$QSEARCH_HOME`), in the order a user reads them."""
    from search.tasks.default import VERSION, qsearch_home

    home = Path(home or qsearch_home())
    kinds = {
        "task": (VERSION, "the default task's model and data (`qsearch prepare` rebuilds it)"),
        "models": ("models", "your Hugging Face folders exported to ONNX, by content hash"),
        "datasets": ("datasets", "the datasets library's copy of your data files"),
        "calibration": ("calibration", "static calibration ranges, per model, data and method"),
        "inferred": ("inferred", "shape-inferred copies of each model the quantizer reads"),
        "fused": ("fused", "attention-fused copies of models (`attention_fusion`)"),
        "smoothed": ("smoothed", "SmoothQuant copies of models, per alpha"),
        "sensitivity": ("sensitivity", "group sensitivity tables (`qsearch sensitivity`)"),
    }
    return [Cache(name, holds, home / folder) for name, (folder, holds) in kinds.items()]


def clear(names: list[str], home: Path | None = None) -> list[tuple[Cache, int]]:
    """Remove the named caches (`all`: every one); returns each with the bytes it held.
    Every name is checked before anything is removed."""
    known = {c.name: c for c in caches(home)}
    unknown = [n for n in names if n != "all" and n not in known]
    if unknown:
        raise QsearchError(
            f"--clear must name caches of {', '.join(known)} or all, but got "
            f"{', '.join(repr(n) for n in unknown)}"
        )
    chosen = list(known.values()) if "all" in names else [known[n] for n in dict.fromkeys(names)]
    out = []
    for cache in chosen:
        size = cache.size()
        if cache.path.exists():
            shutil.rmtree(cache.path)
        out.append((cache, size))
    return out
