"""Walking a space: the beam's one-step neighbours of a config, and every config of it.

Kept apart from `space` (the parsed, validated space and what a sampler is asked) because
these are the two ways a strategy moves through it without a sampler: the beam's expansion
and the exhaustive table of grid search and the efficiency benchmarks.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from search.config import QuantConfig
from search.errors import ConfigError
from search.space import SearchSpace, applies
from search.structure import is_scores_group


def neighbours(space: SearchSpace, config: QuantConfig) -> Iterator[QuantConfig]:
    """Configs one step away: one more operator, or one other dimension changed.

    The beam's expansion: the seed's "add one operator", generalized to the other
    dimensions of the space. Invalid combinations are skipped.
    """
    for candidate in _one_step(space, config):
        if candidate.key != config.key:
            yield candidate


def _one_step(space: SearchSpace, config: QuantConfig) -> Iterator[QuantConfig]:
    data = config.values()
    usable = space.operators_for(data)
    for op in space.bound_operators():
        if op not in config.operators and (op in usable or op not in space.fused_operators):
            yield from _valid(lambda op=op: config.replace(operators=[*config.operators, op]))
    for name, choices in space.values:
        if not applies(name, data):
            continue
        for value in choices:
            if value != data[name]:
                if name == "attention_fusion":
                    yield from _fusion_step(space, config, value)
                else:
                    yield from _valid(lambda n=name, v=value: config.replace(**{n: v}))
    for fusion in space.disable_fusions:
        flipped = set(config.disabled_fusions) ^ {fusion}
        yield from _valid(lambda f=flipped: config.replace(disabled_fusions=sorted(f)))
    for group in space.groups_for(data):  # one more part kept fp32, or one fewer
        flipped = set(config.fp32_groups) ^ {group}
        yield from _valid(lambda g=flipped: config.replace(fp32_groups=sorted(g)))


def _fusion_step(space: SearchSpace, config: QuantConfig, fuse: bool) -> Iterator[QuantConfig]:
    """Fusion switched on (alone, and with its operators quantized: a fused block left
    fp32 is rarely the faster one) or off (dropping the operators only it has and the
    groups it lacks)."""
    if fuse:
        groups = [g for g in config.fp32_groups if not is_scores_group(g)]

        def on(ops: list[str]) -> QuantConfig:
            return config.replace(attention_fusion=True, operators=ops, fp32_groups=groups)

        yield from _valid(lambda: on(list(config.operators)))
        extra = [op for op in space.fused_operators if op not in config.operators]
        if extra:
            yield from _valid(lambda: on([*config.operators, *extra]))
    else:
        ops = [op for op in config.operators if op not in space.fused_operators]
        yield from _valid(lambda: config.replace(attention_fusion=False, operators=ops))


def all_configs(space: SearchSpace) -> Iterator[QuantConfig]:
    """Every distinct valid config (for grid search and tabular benchmarks)."""
    operators = space.bound_operators()
    seen: set[str] = set()
    op_sets = [
        c for r in range(1, len(operators) + 1) for c in itertools.combinations(operators, r)
    ]
    fusion_sets = _subsets(space.disable_fusions)
    group_sets = _subsets(space.fallback_groups)
    # The product of the choices over the dimensions that apply only (a dynamic config has
    # no calibration): the same configs in the same order as the whole product, deduplicated,
    # for a third of the work on the default space.
    for values in _combinations(space.values, {}):
        for ops, fusions, groups in itertools.product(op_sets, fusion_sets, group_sets):
            for config in _valid(
                lambda v=values, o=ops, f=fusions, g=groups: space.make_config(v, o, f, g)
            ):
                key = config.key
                if key not in seen:
                    seen.add(key)
                    yield config


def _subsets(items: Sequence[str]) -> list[tuple[str, ...]]:
    return [c for r in range(len(items) + 1) for c in itertools.combinations(items, r)]


def _combinations(
    dimensions: Sequence[tuple[str, tuple]], values: dict[str, Any]
) -> Iterator[dict[str, Any]]:
    """`values` extended by each choice of every dimension that applies to it; a dimension
    that does not apply keeps its first value (the config ignores it)."""
    if not dimensions:
        yield dict(values)
        return
    (name, choices), rest = dimensions[0], dimensions[1:]
    for value in choices if applies(name, values) else choices[:1]:
        values[name] = value
        yield from _combinations(rest, values)
    del values[name]


def _valid(make: Callable[[], QuantConfig]) -> Iterator[QuantConfig]:
    """The config `make` builds, or none where the combination is invalid."""
    try:
        yield make()
    except ConfigError:
        return
