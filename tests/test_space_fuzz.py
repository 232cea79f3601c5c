"""Property: the space parser returns a valid space or raises SpaceError, nothing else, and
the configs of a valid space are ones Optimum accepts."""

import itertools
import tomllib

from hypothesis import given, settings
from hypothesis import strategies as st

from search.errors import SpaceError
from search.space import SearchSpace
from search.space_schema import SCHEMA
from search.space_walk import all_configs

scalars = st.one_of(
    st.booleans(),
    st.integers(-5, 200),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(
        [
            "dynamic",
            "static",
            "QDQ",
            "QOperator",
            "MatMul",
            "Add",
            "auto",
            "all",
            "uint8",
            "int8",
            "minmax",
            "entropy",
            "percentile",
            "SkipLayerNormFusion",
        ]
    ),
    st.sampled_from([99.9, 99.999, 95, 100, 50.0]),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=4),
    st.dictionaries(st.text(max_size=5), scalars, max_size=2),
)
keys = {section: st.sampled_from([*SCHEMA[section], "bogus"]) for section in SCHEMA}
sections = st.fixed_dictionaries(
    {},
    optional={
        **{s: st.dictionaries(keys[s], values, max_size=6) for s in SCHEMA},
        "name": st.one_of(st.text(max_size=10), st.integers()),
        "description": values,
        "extra": values,
    },
)


@settings(max_examples=400, deadline=None)
@given(sections)
def test_parser_returns_a_space_or_raises_space_error(data):
    try:
        space = SearchSpace.from_dict(data, source="fuzz.toml")
    except SpaceError as exc:
        assert str(exc).startswith("fuzz.toml")
        return
    assert space.choices("mode")
    try:
        bound = space.resolve(["MatMul", "Gather", "Add", "Gemm", "Softmax"])
    except SpaceError:
        return
    for config in itertools.islice(all_configs(bound), 20):
        assert bound.contains(config)
        config.to_optimum()  # a config Optimum refuses is refused by QuantConfig instead


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_arbitrary_text_is_valid_toml_or_a_space_error(text):
    try:
        SearchSpace.from_text(text, source="t.toml")
    except SpaceError:
        pass
    else:
        tomllib.loads(text)
