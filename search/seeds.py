"""Seed recipes: known-good configs for the worker's CPU, evaluated first.

A peer's one default trial (Neural Compressor's dynamic config, 2.69x in 10 s on an
AVX512-VNNI Xeon) used to beat qsearch's whole beam, because the beam starts from
single-operator configs at every dimension's default. The recipes in
`spaces/seeds/recipes.toml` are what measurements on each instruction set showed to win,
with the evidence beside each; the ones the worker's CPU can use, and the space can hold,
are the search's first trials. They are members of the space like any trial: counted in the
budget, kept by the beam when they rank, seen by the samplers.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from search.config import QuantConfig
from search.errors import ConfigError, QsearchError
from search.space import SPACES_DIR, SearchSpace

RECIPES = SPACES_DIR / "seeds" / "recipes.toml"


@dataclass(frozen=True)
class Recipe:
    name: str
    isa: tuple[str, ...]  # the worker needs every one of these flags
    evidence: str
    config: QuantConfig


def load_recipes(path: Path = RECIPES) -> list[Recipe]:
    try:
        data = tomllib.loads(Path(path).read_text())
        return [
            Recipe(
                name=item["name"],
                isa=tuple(item["isa"]),
                evidence=" ".join(item["evidence"].split()),
                config=QuantConfig.from_dict(item["config"]),
            )
            for item in data["seed"]
        ]
    except (OSError, KeyError, TypeError, tomllib.TOMLDecodeError, ConfigError) as exc:
        raise QsearchError(f"{path}: must hold [[seed]] recipes, but {exc!r}") from None


def seeds_for(
    isa: Sequence[str], space: SearchSpace, recipes: Sequence[Recipe] | None = None
) -> dict[str, QuantConfig]:
    """name -> config of the recipes this CPU (`isa` flags, as `worker_info` reports them)
    can use, bound to `space`: operators the space lacks are dropped, and a recipe the space
    cannot hold (another mode, a dimension it does not search) is skipped."""
    have = set(isa)
    out: dict[str, QuantConfig] = {}
    seen: set[str] = set()
    for recipe in load_recipes() if recipes is None else recipes:
        if not set(recipe.isa) <= have:
            continue
        operators = [op for op in recipe.config.operators if op in (space.operators or ())]
        try:
            config = recipe.config.replace(operators=operators)
        except ConfigError:
            continue
        if space.contains(config) and config.key not in seen:
            seen.add(config.key)
            out[recipe.name] = config
    return out
