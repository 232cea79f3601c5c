"""Every config a shipped space can produce is one Optimum accepts: a combination Optimum or
onnxruntime refuses must be refused by `QuantConfig` (and skipped by the space) before a trial,
never fail inside one, where it would count toward the budget."""

from __future__ import annotations

import collections
import random

import pytest

from search.space import SearchSpace, shipped_spaces
from search.space_walk import all_configs
from search.structure import model_structure

# The operator types of an exported BERT classifier (the tiny test model's, which are the
# default MiniLM's): "auto" binds them to Add, Gather, Gemm, LayerNormalization, MatMul, Mul and
# Softmax, "all" adds Transpose and the other data movement.
BERT_OPS = (
    "Add",
    "Cast",
    "Concat",
    "Constant",
    "ConstantOfShape",
    "Div",
    "Equal",
    "Erf",
    "Expand",
    "Gather",
    "Gemm",
    "LayerNormalization",
    "MatMul",
    "Mul",
    "Reshape",
    "Shape",
    "Slice",
    "Softmax",
    "Sqrt",
    "Sub",
    "Tanh",
    "Transpose",
    "Unsqueeze",
    "Where",
)


@pytest.mark.parametrize("path", shipped_spaces(), ids=lambda p: p.stem)
def test_every_config_of_a_shipped_space_converts_to_optimum(path, tiny_task):
    # node scopes and fp32 groups resolve against a model: the tiny BERT's parts
    structure = model_structure(tiny_task.model_path)
    space = SearchSpace.from_file(path).resolve(BERT_OPS, structure=structure)
    refused: collections.Counter[str] = collections.Counter()
    example: dict[str, str] = {}
    count = 0
    for config in all_configs(space):
        count += 1
        try:
            config.to_optimum(structure)
        except Exception as exc:  # noqa: BLE001 - any refusal is the failure reported below
            reason = f"{type(exc).__name__}: {exc}"
            refused[reason] += 1
            example.setdefault(reason, config.describe())
    assert count > 0
    assert not refused, "\n".join(
        f"{n} of {count} configs refused, e.g. {example[r]}: {r}" for r, n in refused.items()
    )


def _sample(space: SearchSpace, seed: int = 0) -> list:
    """One config per (mode, format, types, calibration) of the space, picked at random."""
    from search.calibrate import HISTOGRAM_EXCLUDED, HISTOGRAM_METHODS

    strata: dict[tuple, list] = collections.defaultdict(list)
    for config in all_configs(space):
        # calibrate.py refuses histogram calibration of the attention mask's inputs on a BERT
        # (a model-specific failure, said at once): not the library refusals checked here.
        if config.calibration in HISTOGRAM_METHODS and HISTOGRAM_EXCLUDED & set(config.operators):
            continue
        stratum = (
            config.mode,
            config.format,
            config.activations_dtype,
            config.weights_dtype,
            config.calibration,
        )
        strata[stratum].append(config)
    rng = random.Random(seed)
    return [rng.choice(strata[s]) for s in sorted(strata, key=repr)]


@pytest.mark.parametrize("path", shipped_spaces(), ids=lambda p: p.stem)
def test_a_sample_of_a_shipped_space_quantizes_and_runs_the_tiny_model(path, tiny_task, tmp_path):
    from search.calibrate import CalibrationCache
    from search.measure import make_session
    from search.quantize import quantize

    space = SearchSpace.from_file(path).resolve(tiny_task.operators)
    sample = _sample(space)
    assert sample
    cache = CalibrationCache(tiny_task, directory=None)
    failures = []
    for i, config in enumerate(sample):
        try:
            ranges, smoothed = cache.ranges(config), cache.smoothed(config)
            path = quantize(config, tiny_task.model_path, tmp_path / str(i), ranges, smoothed)
            session = make_session(path, config.session_options())
            tiny_task.outputs(session)
        except Exception as exc:  # noqa: BLE001 - any failure is reported below
            failures.append(f"{config.describe()}: {type(exc).__name__}: {exc}")
    assert not failures, "\n".join(failures)
