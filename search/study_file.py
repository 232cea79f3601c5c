"""Study files: `studies/<name>.toml` describes a whole search (model, data, space, strategy,
budget, measurement), so `qsearch run studies/<name>.toml` reruns it exactly.

Keys map onto `RunSettings`, and the schema is read from it: each field's metadata names its
section and key (`name` at the top level is the study), its type hint the values it takes
(a float also takes an int; a path is a string, taken relative to the study file's folder, so
a study file and its data can move together). Command-line options override the file.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from pathlib import Path
from types import NoneType
from typing import Any

from search.errors import QsearchError
from search.settings import RunSettings


def _value_type(hint) -> type:
    """int, float, bool, str, Path or tuple (of ints: thread counts): a field's type without
    its `| None`."""
    if typing.get_origin(hint) is tuple:
        return tuple
    types = [t for t in typing.get_args(hint) if t is not NoneType] or [hint]
    assert len(types) == 1, f"a study-file field has one type besides None, not {hint}"
    return types[0]


def _schema() -> tuple[dict[str, str], dict[str, dict[str, str]], dict[str, type]]:
    """(top-level key -> field, section -> key -> field, field -> value type) of RunSettings."""
    hints = typing.get_type_hints(RunSettings)
    top: dict[str, str] = {}
    sections: dict[str, dict[str, str]] = {}
    types: dict[str, type] = {}
    for f in dataclasses.fields(RunSettings):
        if "section" not in f.metadata:
            continue  # command-line only
        key = f.metadata["key"] or f.name
        section = f.metadata["section"]
        (sections.setdefault(section, {}) if section else top)[key] = f.name
        types[f.name] = _value_type(hints[f.name])
    return top, sections, types


TOP, SECTIONS, TYPES = _schema()
TYPE_NAMES = {
    int: "int",
    float: "float",
    bool: "bool",
    str: "str",
    Path: "str (a path)",
    tuple: "int or a list of ints",
}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _checked(where: str, value: Any, expected: type) -> Any:
    """`value` as a value of `expected`; TOML's int is taken for a float, never a bool for an
    int (TOML has no null: a field left at None is a key left out)."""
    if expected is tuple:
        if _is_int(value) or (isinstance(value, list) and value and all(map(_is_int, value))):
            return tuple(value) if isinstance(value, list) else (value,)
        raise QsearchError(f"{where} must be an {TYPE_NAMES[tuple]}, but got {value!r}")
    accepted = (int, float) if expected is float else str if expected is Path else expected
    if isinstance(value, accepted) and (expected is bool or not isinstance(value, bool)):
        return float(value) if expected is float else value
    raise QsearchError(f"{where} must be a {TYPE_NAMES[expected]}, but got {value!r}")


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
        if key in TOP:
            items, keys = {key: value}, TOP
        elif key in SECTIONS and isinstance(value, dict):
            items, keys = value, SECTIONS[key]
        else:
            allowed = ", ".join([*TOP, *(f"[{s}]" for s in SECTIONS)])
            raise QsearchError(f"{path}: `{key}` is not a known key; allowed: {allowed}")
        for item, field_value in items.items():
            where = f"`{item}`" if keys is TOP else f"`{key}.{item}`"
            if item not in keys:
                raise QsearchError(
                    f"{path}: {where} is not a known key; allowed in [{key}]: {', '.join(keys)}"
                )
            name = keys[item]
            field_value = _checked(f"{path}: {where}", field_value, TYPES[name])
            if TYPES[name] is Path:
                field_value = (path.parent / field_value).resolve()
            elif name == "space" and field_value.endswith(".toml"):
                field_value = str((path.parent / field_value).resolve())
            out[name] = field_value
    return out


def resolve_settings(study_file: Path | None, options: dict[str, Any]) -> RunSettings:
    """What `qsearch run [STUDY_FILE] [options]` runs: the study file's values, overridden by
    every option given (an option left unset is None and lets the file's value stand)."""
    values = load_study_file(study_file) if study_file is not None else {}
    values.update({k: v for k, v in options.items() if v is not None})
    return RunSettings(**values)
