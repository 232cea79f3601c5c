"""SearchSpace: the declarative TOML space, parsed, validated and frozen.

Every dimension is a list of allowed values whose first entry is the default (the beam starts
from it); the file format and its checks live in `space_schema`. The space knows its
conditional dimensions (calibration exists only in static mode), so Optuna's samplers see
exactly the parameters that matter for a trial.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search.config import QuantConfig, quantizable_operators
from search.errors import ConfigError, SpaceError
from search.space_schema import parse_toml, read_space_text, usable_operators, validate_space
from search.structure import Structure, is_scores_group

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

# Dimensions that exist only for static quantization: not suggested for dynamic trials.
STATIC_ONLY = (
    "format",
    "activations_dtype",
    "activations_symmetric",
    "calibration",
    "percentile",
    "smooth_quant",
)
# ... and only for dynamic quantization (onnxruntime has no static QAttention).
DYNAMIC_ONLY = ("attention_fusion",)
# Operators that the attention-fused model has and the export lacks (`search.fusion`).
FUSION_OPERATORS = ("Attention",)


def applies(name: str, values: dict[str, Any]) -> bool:
    """Whether dimension `name` exists for a config with these values (conditional space)."""
    if name in STATIC_ONLY and values.get("mode") != "static":
        return False
    if name in DYNAMIC_ONLY and values.get("mode") != "dynamic":
        return False
    return name != "percentile" or values.get("calibration") == "percentile"


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
    fallback_groups: tuple[str, ...] = ()  # parts that may stay fp32: one yes/no each
    # Operators only the attention-fused model has ("Attention", set by `resolve` when the
    # space can fuse): offered only to trials with `attention_fusion`.
    fused_operators: tuple[str, ...] = ()

    # --- construction ---------------------------------------------------------------------

    @classmethod
    def from_file(cls, path: str | Path) -> SearchSpace:
        path = Path(path)
        return cls.from_text(read_space_text(path, SPACES_DIR), source=str(path))

    @classmethod
    def from_text(cls, text: str, source: str = "<space>") -> SearchSpace:
        return cls.from_dict(parse_toml(text, source), source=source, text=text)

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], source: str = "<space>", text: str = ""
    ) -> SearchSpace:
        return cls(**validate_space(data, source), text=text)

    def usable_operators(self) -> frozenset[str]:
        """Operator types that some mode and format of this space can quantize."""
        return usable_operators(dict(self.values))

    # --- queries --------------------------------------------------------------------------

    def choices(self, field_name: str) -> tuple:
        return dict(self.values)[field_name]

    @property
    def digest(self) -> str:
        """Hash of the space's content, stored with the study to detect a changed space."""
        # Dimensions added later are left out at their implicit default, so the digest of a
        # space recorded before they existed is unchanged and its study resumes.
        values = tuple(
            v
            for v in self.values
            if v not in (("matmul_scope", ("all",)), ("attention_fusion", (False,)))
        )
        body = (values, self.operators_rule, self.operators, self.disable_fusions)
        body += (self.excluded_nodes,) + ((self.fallback_groups,) if self.fallback_groups else ())
        body = repr(body)
        return hashlib.sha1(body.encode()).hexdigest()[:16]

    def resolve(
        self,
        model_operators: Sequence[str],
        source: str | None = None,
        structure: Structure | None = None,
    ) -> SearchSpace:
        """Bind the space to a model: `auto` becomes the model's quantizable operators, and an
        operator the model does not contain, or an fp32 group naming none of its parts (given
        its `structure`), is an error (a typo or the wrong model)."""
        present = set(model_operators)
        fused = ()
        if True in self.choices("attention_fusion"):
            fused = tuple(op for op in FUSION_OPERATORS if op not in present)
            present |= set(fused)
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
        for group in self.fallback_groups if structure is not None else ():
            if not structure.selected_groups(group):
                raise SpaceError(
                    f"{where}: `fallback.groups` must name parts of the model "
                    f"({structure.describe()}), but {group!r} names none"
                )
        fused = tuple(op for op in fused if op in operators)
        return _replace(self, operators=operators, fused_operators=fused)

    def default_config(self, operators: Sequence[str]) -> QuantConfig:
        """The config made of every dimension's first value, with `operators`."""
        values = {name: choices[0] for name, choices in self.values}
        if not values["attention_fusion"]:  # operators only the fused model has drop out
            operators = [op for op in operators if op not in self.fused_operators]
        return self.make_config(values, operators, ())

    def make_config(
        self,
        values: dict[str, Any],
        operators: Sequence[str],
        disabled: Sequence[str],
        groups: Sequence[str] = (),
    ) -> QuantConfig:
        if not applies("attention_fusion", values):
            values = {**values, "attention_fusion": False}
        if not values.get("attention_fusion", False):
            lacking = sorted(set(operators) & set(self.fused_operators))
            if lacking:
                raise ConfigError(
                    f"`operators` must not include {lacking} without `attention_fusion` (the "
                    f"model has none before fusion), but got {list(operators)}"
                )
        return QuantConfig(
            operators=tuple(operators),
            excluded_nodes=self.excluded_nodes,
            disabled_fusions=tuple(disabled),
            fp32_groups=tuple(groups),
            **values,
        )

    def bound_operators(self) -> tuple[str, ...]:
        """The operator types of the space bound to a model (`resolve`)."""
        if self.operators is None:
            raise SpaceError(f"{self.source}: the space must be bound to a model (resolve) first")
        return self.operators

    def suggest(self, trial) -> QuantConfig:  # trial: optuna.Trial
        """Ask Optuna for one config. A sampler sees only dimensions that change the model:
        static-only dimensions in static mode, operators the chosen mode (and format) can
        quantize, and the MatMul scope when a MatMul or Gemm is chosen (a conditional space,
        which Optuna's samplers handle); operators, fusions and fp32 groups are one yes/no
        parameter each. On the seed's operators space, 6 random trials had left 66 copies
        and 15 invalid combinations in the study for 10 distinct configs."""
        values: dict[str, Any] = {}
        for name, choices in self.values:
            if self._suggested(name, choices, values):
                values[name] = trial.suggest_categorical(name, list(choices))
            elif name == "attention_fusion":
                values[name] = choices[0]
        usable = self.operators_for(values)
        operators = [
            op
            for op in self.bound_operators()
            if op in usable and trial.suggest_categorical(f"op.{op}", [False, True])
        ]
        scopes = self.choices("matmul_scope")
        if len(scopes) > 1 and {"MatMul", "Gemm"} & set(operators):
            values["matmul_scope"] = trial.suggest_categorical("matmul_scope", list(scopes))
        else:
            values["matmul_scope"] = scopes[0]
        disabled = [
            f
            for f in self.disable_fusions
            if trial.suggest_categorical(f"disable.{f}", [False, True])
        ]
        groups = [
            g
            for g in self.groups_for(values)
            if trial.suggest_categorical(f"fp32.{g}", [False, True])
        ]
        return self.make_config(values, operators, disabled, groups)

    @staticmethod
    def _suggested(name: str, choices: tuple, values: dict[str, Any]) -> bool:
        """Whether `suggest` asks Optuna for dimension `name` in the loop over `values`: the
        MatMul scope is asked later (it depends on the operators), and attention fusion only
        when there is a choice, so studies recorded before it existed keep their params."""
        if name == "matmul_scope" or (name == "attention_fusion" and len(choices) < 2):
            return False
        return applies(name, values)

    def operators_for(self, values: dict[str, Any]) -> frozenset[str]:
        """Operator types a config with these values can quantize (mode, format, fusion)."""
        usable = quantizable_operators(values["mode"], values.get("format", "QOperator"))
        if values.get("attention_fusion"):
            return usable
        return usable - set(self.fused_operators)

    def groups_for(self, values: dict[str, Any]) -> tuple[str, ...]:
        """Fallback groups that exist for these values: a fused graph has no score MatMuls."""
        if values.get("attention_fusion"):
            return tuple(g for g in self.fallback_groups if not is_scores_group(g))
        return self.fallback_groups

    def params(self, config: QuantConfig) -> dict[str, Any]:
        """The Optuna parameters `suggest` would produce for `config` (to enqueue it)."""
        out: dict[str, Any] = {}
        data = config.values()
        for name, choices in self.values:
            if self._suggested(name, choices, data):
                out[name] = data[name]
        usable = self.operators_for(data)
        for op in self.bound_operators():
            if op in usable:
                out[f"op.{op}"] = op in config.operators
        if len(self.choices("matmul_scope")) > 1 and {"MatMul", "Gemm"} & set(config.operators):
            out["matmul_scope"] = config.matmul_scope
        for fusion in self.disable_fusions:
            out[f"disable.{fusion}"] = fusion in config.disabled_fusions
        for group in self.groups_for(data):
            out[f"fp32.{group}"] = group in config.fp32_groups
        return out

    def contains(self, config: QuantConfig) -> bool:
        data = config.values()
        for name, choices in self.values:
            if applies(name, data) and data[name] not in choices:
                return False
        return (
            set(config.operators) <= set(self.bound_operators())
            and set(config.disabled_fusions) <= set(self.disable_fusions)
            and set(config.fp32_groups) <= set(self.fallback_groups)
        )


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
