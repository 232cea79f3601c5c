"""Study files: `studies/<name>.toml` describes a whole search (model, data, space, strategy,
budget, measurement), so `qsearch run studies/<name>.toml` reruns it exactly.

Keys map onto `RunSettings`; command-line options override them. Relative paths are taken
relative to the study file's folder, so a study file and its data can move together.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from search.errors import QsearchError

# section -> key in the file -> RunSettings field
SECTIONS: dict[str, dict[str, str]] = {
    "model": {"path": "model", "tokenizer": "tokenizer", "task_dir": "task_dir"},
    "data": {
        "path": "data",
        "text_column": "text_column",
        "text_pair_column": "text_pair_column",
        "label_column": "label_column",
        "split": "split",
        "eval_size": "eval_size",
        "calibration_size": "calibration_size",
        "metric": "metric",
    },
    "search": {
        "space": "space",
        "beam": "beam",
        "sampler": "sampler",
        "trials": "trials",
        "timeout": "timeout",
        "max_drop": "max_drop",
        "prune_drop": "prune_drop",
        "seed": "seed",
        "presets": "presets",
        "confirm": "confirm",
        "storage": "storage",
        "isolate": "isolate",
        "trial_time_limit": "trial_time_limit",
    },
    "measure": {
        "timing_seconds": "timing_seconds",
        "timing_target": "timing_target",
        "confirm_seconds": "confirm_seconds",
        "objective": "objective",
        "threads": "threads",
    },
}
PATH_FIELDS = {"model", "tokenizer", "task_dir", "data"}
TYPES = {
    "beam": int,
    "trials": int,
    "eval_size": int,
    "calibration_size": int,
    "seed": int,
    "threads": int,
    "timeout": (int, float),
    "max_drop": (int, float),
    "prune_drop": (int, float),
    "timing_seconds": (int, float),
    "confirm_seconds": (int, float),
    "presets": bool,
    "confirm": bool,
    "isolate": bool,
    "trial_time_limit": (int, float),
}


def load_study_file(path: Path) -> dict[str, Any]:
    """RunSettings fields from a study file; unknown keys and wrong types are refused."""
    path = Path(path)
    if not path.is_file():
        raise QsearchError(f"study file `{path}` must exist, but it does not")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise QsearchError(f"{path}: must be valid TOML, but {exc}") from None
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key == "name":
            out["study"] = str(value)
            continue
        if key not in SECTIONS or not isinstance(value, dict):
            allowed = ", ".join(["name", *(f"[{s}]" for s in SECTIONS)])
            raise QsearchError(f"{path}: `{key}` is not a known key; allowed: {allowed}")
        for item, field_value in value.items():
            if item not in SECTIONS[key]:
                raise QsearchError(
                    f"{path}: `{key}.{item}` is not a known key; allowed in [{key}]: "
                    f"{', '.join(SECTIONS[key])}"
                )
            name = SECTIONS[key][item]
            expected = TYPES.get(name, str)
            bad_bool = isinstance(field_value, bool) and expected is not bool
            if bad_bool or not isinstance(field_value, expected):
                kind = getattr(expected, "__name__", "number")
                raise QsearchError(
                    f"{path}: `{key}.{item}` must be a {kind}, but got {field_value!r}"
                )
            if name in PATH_FIELDS or (name == "space" and field_value.endswith(".toml")):
                field_value = (path.parent / field_value).resolve()
            out[name] = field_value
    return out
