"""Seed recipes: chosen by the worker's instruction sets, bound to the space, evaluated
first and counted, kept by the beam as round-0 members, never proposed twice."""

from __future__ import annotations

import optuna
import pytest

from search.runner import evaluated_count, run_search
from search.seeds import load_recipes, seeds_for
from search.space import load_space
from search.space_walk import neighbours
from search.strategies import BeamSearch
from search.strategies.seeded import SEED, SeedStrategy, seed_configs
from tests.fakes import FP32, FakeEvaluator, landscape

MODEL_OPS = ["Add", "Gather", "Gemm", "LayerNormalization", "MatMul", "Mul", "Softmax"]


def test_every_recipe_is_a_valid_config_with_its_evidence():
    recipes = load_recipes()
    assert {r.isa for r in recipes} >= {("avx512_vnni",), ("avx2",), ("asimddp",)}
    for recipe in recipes:
        assert len(recipe.evidence) > 40 and recipe.config.mode == "dynamic"


@pytest.mark.parametrize(
    "isa, expected",
    [
        (
            ["avx2", "avx512f", "avx512_vnni"],
            [
                "vnni-dynamic-weight-matmuls",
                "vnni-dynamic-weight-matmuls-per-tensor",
                "avx2-dynamic-per-tensor",
            ],
        ),
        (["avx2"], ["avx2-dynamic-weight-matmuls-per-tensor", "avx2-dynamic-per-tensor"]),
        (["asimddp"], ["arm64-dot-product"]),
        ([], []),
    ],
)
def test_recipes_follow_the_worker_s_instruction_sets(isa, expected):
    space = load_space("default").resolve(MODEL_OPS)
    seeds = seeds_for(isa, space)
    assert list(seeds) == expected
    assert all(space.contains(c) for c in seeds.values())
    if expected and expected[0].startswith("vnni"):
        best = seeds[expected[0]]
        assert best.matmul_scope == "weights" and best.per_channel
        assert best.disabled_fusions == ("SkipLayerNormFusion",)


def test_a_space_that_cannot_hold_a_recipe_skips_it():
    assert seeds_for(["avx512_vnni", "avx2"], load_space("static").resolve(MODEL_OPS)) == {}
    dynamic = seeds_for(["avx512_vnni", "avx2"], load_space("dynamic").resolve(MODEL_OPS))
    assert list(dynamic) == ["avx2-dynamic-per-tensor"]  # dynamic.toml has no matmul_scope


def test_seeds_are_the_first_trials_counted_and_the_beam_keeps_them():
    space = load_space("default").resolve(MODEL_OPS)
    seeds = seeds_for(["avx2", "avx512_vnni"], space)
    study = optuna.create_study(directions=["maximize", "maximize"])
    study.set_user_attr("fp32_accuracy", FP32)
    evaluator = FakeEvaluator()
    run_search(study, space, SeedStrategy(seeds), evaluator, trials=20)
    assert evaluator.calls == [c.key for c in seeds.values()]
    assert [t.user_attrs[SEED] for t in study.trials] == list(seeds)
    assert evaluated_count(study) == len(seeds)
    again = run_search(study, space, SeedStrategy(seeds), evaluator, trials=20)
    assert again.evaluated == 0 and len(evaluator.calls) == len(seeds)  # resumed: nothing new
    assert [c.key for c in seed_configs(study)] == [c.key for c in seeds.values()]

    beam = BeamSearch(width=2)
    first = beam.next_round(study, space)
    assert first.number == 0 and all(
        c.key not in {s.key for s in seeds.values()} for c in first.pending
    )
    run_search(study, space, beam, evaluator, trials=12)
    best_seed = max(seeds.values(), key=lambda c: landscape(c)[1])
    kept = beam.next_round(study, space).kept
    assert best_seed.key in kept or beam.next_round(study, space).number > 1
    near = {c.key for c in neighbours(space, best_seed)}
    assert near & {t.user_attrs["config_key"] for t in study.trials if "config_key" in t.user_attrs}


def test_a_run_starts_with_this_cpu_s_recipes_before_presets_and_strategy(
    tmp_path, monkeypatch, tiny_task_dir
):
    from typer.testing import CliRunner

    from search.cli import app
    from search.structure import model_structure
    from search.tasks.default import load_task_dir
    from search.worker import worker_info

    monkeypatch.chdir(tmp_path)
    args = ["run", "--task-dir", str(tiny_task_dir), "--space", "dynamic", "--beam", "2"]
    args += ["--trials", "4", "--timing-seconds", "0.2", "--no-confirm", "--no-report"]
    result = CliRunner().invoke(app, [*args, "--study", "seeded"])
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="seeded", storage="sqlite:///studies/seeded.db")
    task = load_task_dir(tiny_task_dir)
    space = load_space("dynamic").resolve(
        task.operators, structure=model_structure(task.model_path)
    )
    expected = seeds_for(worker_info()["isa"], space)
    seeded = [t.user_attrs.get(SEED) for t in study.trials[: len(expected)]]
    assert seeded == list(expected)  # first, in the recipes' order, before Optimum's presets
    assert [t for t in study.trials[len(expected) :] if t.user_attrs.get(SEED)] == []
    assert study.trials[len(expected)].user_attrs.get("reference")  # then the presets
