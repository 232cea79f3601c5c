"""SearchSpace: the declarative TOML space, parsed, validated and frozen.

Every dimension is a list of allowed values whose first entry is the default (the beam starts
from it). Problems are found here, before any trial, and reported with the file, the key and
what is allowed. The space also knows its conditional dimensions (calibration exists only in
static mode), so Optuna's samplers see exactly the parameters that matter for a trial.
"""

from __future__ import annotations

import hashlib
import itertools
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search.config import (
    CALIBRATION_METHODS,
    DTYPES,
    FORMATS,
    GRAPH_OPTIMIZATION_LEVELS,
    KNOWN_FUSIONS,
    MODES,
    QuantConfig,
    all_quantizable_operators,
    quantizable_operators,
)
from search.errors import ConfigError, SpaceError

SPACES_DIR = Path(__file__).resolve().parent.parent / "spaces"
# Operators that only move or select data: quantizing one of them alone changes little (they
# pass int8 between quantized neighbours). `operators = "auto"` leaves them out to keep the
# search focused on compute; `operators = "all"` includes them, as seed 004's search did.
DATA_MOVEMENT = frozenset(
    {
        "Reshape",
        "Squeeze",
        "Unsqueeze",
        "Concat",
        "Slice",
        "Split",
        "Flatten",
        "Pad",
        "Resize",
        "Transpose",
        "Where",
        "Expand",
    }
)

# section -> key -> (allowed values or None for free numbers, expected python type)
_SCHEMA: dict[str, dict[str, tuple[tuple | None, type]]] = {
    "quantization": {
        "mode": (MODES, str),
        "format": (FORMATS, str),
        "operators": (None, str),
        "per_channel": ((False, True), bool),
        "reduce_range": ((False, True), bool),
        "activations_dtype": (DTYPES, str),
        "weights_dtype": (DTYPES, str),
        "activations_symmetric": ((False, True), bool),
        "weights_symmetric": ((False, True), bool),
        "excluded_nodes": (None, str),
    },
    "calibration": {
        "method": (CALIBRATION_METHODS, str),
        "percentile": (None, float),
    },
    "session": {
        "graph_optimization": (GRAPH_OPTIMIZATION_LEVELS, str),
        "disable_fusions": (KNOWN_FUSIONS, str),
    },
}
_TOP_LEVEL = ("name", "description")

# TOML key -> QuantConfig field for the one-of dimensions, in a fixed order.
_DIMENSIONS = {
    ("quantization", "mode"): "mode",
    ("quantization", "format"): "format",
    ("quantization", "per_channel"): "per_channel",
    ("quantization", "reduce_range"): "reduce_range",
    ("quantization", "activations_dtype"): "activations_dtype",
    ("quantization", "weights_dtype"): "weights_dtype",
    ("quantization", "activations_symmetric"): "activations_symmetric",
    ("quantization", "weights_symmetric"): "weights_symmetric",
    ("calibration", "method"): "calibration",
    ("calibration", "percentile"): "percentile",
    ("session", "graph_optimization"): "graph_optimization",
}
_DEFAULTS = {
    "mode": ("dynamic",),
    "format": ("QOperator",),
    "per_channel": (False,),
    "reduce_range": (False,),
    "activations_dtype": ("uint8",),
    "weights_dtype": ("int8",),
    "activations_symmetric": (False,),
    "weights_symmetric": (True,),
    "calibration": ("minmax",),
    "percentile": (99.999,),
    "graph_optimization": ("all",),
}
# Dimensions that exist only for static quantization: not suggested for dynamic trials.
STATIC_ONLY = ("format", "activations_dtype", "activations_symmetric", "calibration", "percentile")


@dataclass(frozen=True)
class SearchSpace:
    """Allowed values per dimension (first = default); operators and fusions are subsets."""

    name: str
    description: str
    source: str
    text: str
    values: tuple[tuple[str, tuple], ...]
    operators: tuple[str, ...] | None  # None until bound to a model when the rule is not "list"
    operators_rule: str  # "list", "auto" (compute operators of the model) or "all"
    disable_fusions: tuple[str, ...]
    excluded_nodes: tuple[str, ...]

    # --- construction ---------------------------------------------------------------------

    @classmethod
    def from_file(cls, path: str | Path) -> SearchSpace:
        path = Path(path)
        if not path.exists():
            candidates = ", ".join(p.name for p in sorted(SPACES_DIR.glob("*.toml")))
            raise SpaceError(
                f"space file `{path}` must exist, but it does not "
                f"(shipped spaces in {SPACES_DIR}: {candidates})"
            )
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise SpaceError(f"{path}: must be a readable UTF-8 TOML file, but {exc}") from None
        return cls.from_text(text, source=str(path))

    @classmethod
    def from_text(cls, text: str, source: str = "<space>") -> SearchSpace:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise SpaceError(f"{source}: must be valid TOML, but {exc}") from None
        return cls.from_dict(data, source=source, text=text)

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], source: str = "<space>", text: str = ""
    ) -> SearchSpace:
        def fail(key: str, message: str) -> SpaceError:
            return SpaceError(f"{source}: `{key}` {message}")

        allowed_top = set(_SCHEMA) | set(_TOP_LEVEL)
        for key in data:
            if key not in allowed_top:
                raise fail(key, f"is not a known key; allowed: {', '.join(sorted(allowed_top))}")
        name = data.get("name", Path(source).stem if source != "<space>" else "space")
        if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
            raise fail("name", f"must be a name of letters, digits, - and _, but got {name!r}")
        description = data.get("description", "")
        if not isinstance(description, str):
            raise fail("description", f"must be a string, but got {description!r}")

        lists: dict[str, tuple] = {}
        for section, keys in _SCHEMA.items():
            body = data.get(section, {})
            if not isinstance(body, dict):
                raise fail(section, f"must be a table ([{section}]), but got {body!r}")
            for key, value in body.items():
                full = f"{section}.{key}"
                if key not in keys:
                    raise fail(
                        full, f"is not a known key; allowed in [{section}]: {', '.join(keys)}"
                    )
                allowed, kind = keys[key]
                items = value if isinstance(value, list) else [value]
                if key == "operators" and value in ("auto", "all"):
                    lists[full] = value
                    continue
                if not items and key not in ("disable_fusions", "excluded_nodes"):
                    raise fail(full, "must list at least one value, but the list is empty")
                for item in items:
                    ok = isinstance(item, kind) and not (
                        kind is not bool and isinstance(item, bool)
                    )
                    if kind is float and isinstance(item, int) and not isinstance(item, bool):
                        ok = True
                    if not ok:
                        raise fail(full, f"must hold {kind.__name__} values, but got {item!r}")
                    if allowed is not None and item not in allowed:
                        shown = ", ".join(repr(a) for a in allowed)
                        raise fail(full, f"must be among {shown}, but got {item!r}")
                if len(set(items)) != len(items):
                    raise fail(full, f"must not repeat values, but got {items!r}")
                lists[full] = tuple(items)

        operators = lists.get("quantization.operators", "auto")
        if isinstance(operators, str):
            operators_rule, operators = operators, None
        else:
            operators_rule = "list"
        if operators is not None:
            known = all_quantizable_operators()
            unknown = [op for op in operators if op not in known]
            if unknown:
                raise fail(
                    "quantization.operators",
                    f"must name quantizable operator types ({', '.join(sorted(known))}) "
                    f'or be "auto", but got unknown {unknown}',
                )
        values = []
        for (section, key), field_name in _DIMENSIONS.items():
            values.append((field_name, lists.get(f"{section}.{key}", _DEFAULTS[field_name])))
        space = cls(
            name=name,
            description=description,
            source=source,
            text=text,
            values=tuple(values),
            operators=operators,
            operators_rule=operators_rule,
            disable_fusions=lists.get("session.disable_fusions", ()),
            excluded_nodes=lists.get("quantization.excluded_nodes", ()),
        )
        space._check_combinations(fail, static_keys=[k for k in lists if k.startswith("calib")])
        return space

    def _check_combinations(self, fail, static_keys: Sequence[str]) -> None:
        modes = self.choices("mode")
        if "static" not in modes and static_keys:
            raise fail(
                static_keys[0],
                "applies to static quantization only, but quantization.mode "
                'does not include "static"; add it or remove the [calibration] section',
            )
        if "calibration.percentile" in static_keys and "percentile" not in self.choices(
            "calibration"
        ):
            raise fail("calibration.percentile", 'needs calibration.method to include "percentile"')
        for pct in self.choices("percentile"):
            if not 90.0 < float(pct) < 100.0:
                raise fail("calibration.percentile", f"must be between 90 and 100, but got {pct}")
        if modes == ("dynamic",):
            for key, allowed in (("format", "QOperator"), ("activations_dtype", "uint8")):
                if allowed not in self.choices(key):
                    raise fail(
                        f"quantization.{key}",
                        f'must include "{allowed}" when mode is only '
                        f'"dynamic" (dynamic quantization has no other), but got '
                        f"{list(self.choices(key))}",
                    )
        if self.operators is not None:
            usable = self.usable_operators()
            useless = [op for op in self.operators if op not in usable]
            if useless:
                raise fail(
                    "quantization.operators",
                    f"must name operators that mode "
                    f"{list(modes)} can quantize ({', '.join(sorted(usable))}), but got "
                    f"{useless}, which no mode of this space quantizes",
                )

    def usable_operators(self) -> frozenset[str]:
        """Operator types that some mode and format of this space can quantize."""
        usable: set[str] = set()
        for mode in self.choices("mode"):
            for fmt in self.choices("format") if mode == "static" else ("QOperator",):
                usable |= quantizable_operators(mode, fmt)
        return frozenset(usable)

    # --- queries --------------------------------------------------------------------------

    def choices(self, field_name: str) -> tuple:
        return dict(self.values)[field_name]

    @property
    def digest(self) -> str:
        """Hash of the space's content, stored with the study to detect a changed space."""
        body = repr(
            (
                self.values,
                self.operators_rule,
                self.operators,
                self.disable_fusions,
                self.excluded_nodes,
            )
        )
        return hashlib.sha1(body.encode()).hexdigest()[:16]

    def resolve(self, model_operators: Sequence[str], source: str | None = None) -> SearchSpace:
        """Bind the space to a model: `auto` becomes the model's quantizable operators, and an
        operator the model does not contain is an error (a typo or the wrong model)."""
        present = set(model_operators)
        usable = self.usable_operators()
        quantizable = sorted(present & usable)
        where = source or self.source
        if self.operators_rule == "all":
            operators = tuple(quantizable)
        elif self.operators_rule == "auto":
            operators = tuple(op for op in quantizable if op not in DATA_MOVEMENT)
        else:
            missing = [op for op in self.operators if op not in present]
            if missing:
                raise SpaceError(
                    f"{where}: `quantization.operators` must name operator types present in "
                    f"the model ({', '.join(quantizable)}), but got {missing}"
                )
            operators = self.operators
        if not operators:
            raise SpaceError(
                f"{where}: the model must contain an operator type that mode "
                f"{list(self.choices('mode'))} can quantize ({', '.join(sorted(usable))}), "
                f"but its operator types are {sorted(present)}"
            )
        return _replace(self, operators=operators)

    def default_config(self, operators: Sequence[str]) -> QuantConfig:
        """The config made of every dimension's first value, with `operators`."""
        values = {name: choices[0] for name, choices in self.values}
        return self.make_config(values, operators, ())

    def make_config(
        self, values: dict[str, Any], operators: Sequence[str], disabled: Sequence[str]
    ) -> QuantConfig:
        return QuantConfig(
            operators=tuple(operators),
            excluded_nodes=self.excluded_nodes,
            disabled_fusions=tuple(disabled),
            **values,
        )

    def _require_operators(self) -> tuple[str, ...]:
        if self.operators is None:
            raise SpaceError(f"{self.source}: the space must be bound to a model (resolve) first")
        return self.operators

    def suggest(self, trial) -> QuantConfig:  # trial: optuna.Trial
        """Ask Optuna for one config. Static-only dimensions are suggested only in static mode
        (a conditional space, which Optuna's samplers handle), operators and fusions as one
        yes/no parameter each."""
        values: dict[str, Any] = {}
        for name, choices in self.values:
            if name in STATIC_ONLY and values.get("mode") != "static":
                continue
            if name == "percentile" and values.get("calibration") != "percentile":
                continue
            values[name] = trial.suggest_categorical(name, list(choices))
        operators = [
            op
            for op in self._require_operators()
            if trial.suggest_categorical(f"op.{op}", [False, True])
        ]
        disabled = [
            f
            for f in self.disable_fusions
            if trial.suggest_categorical(f"disable.{f}", [False, True])
        ]
        return self.make_config(values, operators, disabled)

    def params(self, config: QuantConfig) -> dict[str, Any]:
        """The Optuna parameters `suggest` would produce for `config` (to enqueue it)."""
        out: dict[str, Any] = {}
        data = config.to_dict()
        for name, _choices in self.values:
            if name in STATIC_ONLY and config.mode != "static":
                continue
            if name == "percentile" and config.calibration != "percentile":
                continue
            out[name] = data[name]
        for op in self._require_operators():
            out[f"op.{op}"] = op in config.operators
        for fusion in self.disable_fusions:
            out[f"disable.{fusion}"] = fusion in config.disabled_fusions
        return out

    def contains(self, config: QuantConfig) -> bool:
        data = config.to_dict()
        for name, choices in self.values:
            if name in STATIC_ONLY and config.mode != "static":
                continue
            if name == "percentile" and config.calibration != "percentile":
                continue
            if data[name] not in choices:
                return False
        return set(config.operators) <= set(self._require_operators()) and set(
            config.disabled_fusions
        ) <= set(self.disable_fusions)

    def neighbours(self, config: QuantConfig) -> Iterator[QuantConfig]:
        """Configs one step away: one more operator, or one other dimension changed.

        The beam's expansion: the seed's "add one operator", generalized to the other
        dimensions of the space. Invalid combinations are skipped.
        """
        for candidate in self._one_step(config):
            if candidate.key != config.key:
                yield candidate

    def _one_step(self, config: QuantConfig) -> Iterator[QuantConfig]:
        for op in self._require_operators():
            if op not in config.operators:
                yield from _valid(lambda op=op: config.replace(operators=[*config.operators, op]))
        data = config.to_dict()
        for name, choices in self.values:
            if name in STATIC_ONLY and config.mode != "static":
                continue
            if name == "percentile" and config.calibration != "percentile":
                continue
            for value in choices:
                if value != data[name]:
                    yield from _valid(lambda n=name, v=value: config.replace(**{n: v}))
        for fusion in self.disable_fusions:
            flipped = set(config.disabled_fusions) ^ {fusion}
            yield from _valid(lambda f=flipped: config.replace(disabled_fusions=sorted(f)))

    def enumerate(self) -> Iterator[QuantConfig]:
        """Every distinct valid config (for grid search and tabular benchmarks)."""
        operators = self._require_operators()
        names = [name for name, _ in self.values]
        seen: set[str] = set()
        op_sets = [
            c for r in range(1, len(operators) + 1) for c in itertools.combinations(operators, r)
        ]
        fusion_sets = [
            c
            for r in range(len(self.disable_fusions) + 1)
            for c in itertools.combinations(self.disable_fusions, r)
        ]
        for combo in itertools.product(*(choices for _, choices in self.values)):
            values = dict(zip(names, combo, strict=True))
            for ops in op_sets:
                for fusions in fusion_sets:
                    for config in _valid(
                        lambda v=values, o=ops, f=fusions: self.make_config(v, o, f)
                    ):
                        if config.key not in seen:
                            seen.add(config.key)
                            yield config


def _valid(make) -> Iterator[QuantConfig]:
    try:
        yield make()
    except ConfigError:
        return


def _replace(space: SearchSpace, **changes: Any) -> SearchSpace:
    from dataclasses import replace

    return replace(space, **changes)


def shipped_spaces() -> list[Path]:
    return sorted(SPACES_DIR.glob("*.toml"))


def load_space(name_or_path: str | Path) -> SearchSpace:
    """A shipped space by name (`default`, `operators`) or any TOML file by path."""
    path = Path(name_or_path)
    if path.suffix != ".toml" and not path.exists():
        path = SPACES_DIR / f"{name_or_path}.toml"
    return SearchSpace.from_file(path)
