"""The search-efficiency benchmark's code paths: a real table on the tiny task, replayed; the
larger replay checks on synthetic tables (tests.fakes.landscape), which are instant."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

from search.cli import app
from search.config import QuantConfig
from search.errors import QsearchError, TrialError
from search.measure import TimingSettings
from search.objective import Evaluator
from search.space import SearchSpace, load_space
from search.space_walk import all_configs
from search.strategies.base import records
from tests.fakes import FP32, FakeEvaluator, landscape


def load_benchmark():
    """The script as a module, registered in sys.modules (its dataclasses need that)."""
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "search_efficiency.py"
    spec = importlib.util.spec_from_file_location("search_efficiency", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bench = load_benchmark()
bench_table = sys.modules["benchmarks.efficiency_table"]
FAST = TimingSettings(seconds=0.3, warmup_runs=1, block_pairs=2, min_blocks=2)
MODEL_OPS = ["Add", "Gather", "Gemm", "MatMul", "Mul", "Softmax", "Transpose", "Where"]
TINY_SPACE = """
name = "tiny"
[quantization]
mode = ["dynamic"]
operators = ["MatMul", "Gather"]
per_channel = [false, true]
"""


def synthetic_table(space_name="dynamic", fail_when=None):
    """The whole space evaluated by the fake evaluator, through the benchmark's own filler."""
    space = load_space(space_name).resolve(MODEL_OPS)
    study = optuna.create_study(directions=["maximize", "maximize"])
    bench.fill_table(study, space, FakeEvaluator(fail_when=fail_when))
    return bench.Table.from_study(study, space)


@pytest.fixture(scope="module")
def table():
    return synthetic_table()


def test_hypervolume_of_hand_made_points():
    hv = bench.hypervolume
    assert hv([], (0, 0)) == 0.0
    assert hv([(2, 3)], (0, 0)) == pytest.approx(6.0)
    # two rectangles overlapping in [0,1]x[0,1]: 2*1 + 1*2 - 1
    assert hv([(2, 1), (1, 2)], (0, 0)) == pytest.approx(3.0)
    # a dominated point and a duplicate add nothing
    assert hv([(2, 1), (1, 2), (1, 1), (2, 1)], (0, 0)) == pytest.approx(3.0)
    # points not above the reference in both objectives contribute nothing
    assert hv([(2, 1), (-1, 5), (3, 0)], (0, 0)) == pytest.approx(2.0)
    assert hv([(0.80, 2.0)], (0.75, 1.0)) == pytest.approx(0.05)
    points = [(0.81, 1.2), (0.80, 1.9), (0.78, 2.1), (0.70, 3.0), (0.79, 1.5)]
    ref = (0.75, 1.0)
    expected = bench._sweep_hypervolume(bench.np.array(points[:3]), bench.np.array(ref))
    assert hv(points, ref) == pytest.approx(expected)
    assert expected == pytest.approx(0.06 * 0.2 + 0.05 * 0.7 + 0.03 * 0.2)


def test_table_evaluator_replays_records_and_failures():
    t = synthetic_table(fail_when=lambda c: c.operators == ("Gather",) and not c.per_channel)
    evaluator = bench.TableEvaluator(t)
    assert evaluator.fp32_accuracy == FP32
    config = t.space.default_config(["MatMul"])
    result = evaluator.evaluate(config)
    assert (result.accuracy, result.speedup) == pytest.approx(landscape(config))
    assert result.attrs["config_key"] == config.key
    with pytest.raises(TrialError, match="synthetic"):
        evaluator.evaluate(t.space.default_config(["Gather"]))
    with pytest.raises(TrialError, match="not in the table"):
        evaluator.evaluate(QuantConfig(operators=("Transpose",)))
    assert len(evaluator.missing) == 1


def test_an_incomplete_table_is_refused():
    space = load_space("dynamic").resolve(MODEL_OPS)
    study = optuna.create_study(directions=["maximize", "maximize"])
    study.set_user_attr("fp32_accuracy", FP32)
    from search.runner import run_search
    from search.strategies import GridStrategy

    run_search(study, space, GridStrategy(), FakeEvaluator(), trials=10)
    with pytest.raises(QsearchError, match="86 of 96 are missing"):
        bench.Table.from_study(study, space)


def test_the_whole_budget_finds_the_whole_frontier(table):
    reference = (FP32 - 0.05, 1.0)
    run = bench.replay(table, "grid", len(table.entries), 0, reference)
    assert run.share == pytest.approx(1.0)
    assert run.evaluated == len(table.entries)
    assert bench.frontier(run.found) == bench.frontier(table.points())


def test_confirmed_speedups_score_what_a_strategy_found():
    """A strategy chooses from the trials' numbers; its points (and the table's) are scored
    with the confirmed speedup: a lucky table maximum cannot set the bar."""
    space = load_space("dynamic").resolve(MODEL_OPS)
    study = optuna.create_study(directions=["maximize", "maximize"])
    bench.fill_table(study, space, FakeEvaluator())
    plain = bench.Table.from_study(study, space)
    reference = (FP32 - 0.05, 1.0)
    fastest, (accuracy, speed) = max(plain.points().items(), key=lambda kv: kv[1][1])
    lowered = 1.0 + (speed - 1.0) / 2
    # the fake landscape repeats each point: lower every config at the fastest point
    twins = {k for k, v in plain.points().items() if v == (accuracy, speed)}
    numbers = [r.number for r in records(study) if r.key in twins]
    checks = {str(n): {"speedup": lowered, "low": 1.0} for n in numbers}
    study.set_user_attr("confirmations", checks)
    table = bench.Table.from_study(study, space)
    assert table.entries[fastest].values == (accuracy, speed)  # what strategies see
    assert table.points()[fastest] == (accuracy, lowered)  # what is scored
    assert bench.hypervolume(table.points().values(), reference) < bench.hypervolume(
        plain.points().values(), reference
    )
    run = bench.replay(table, "grid", len(table.entries), 0, reference)
    assert run.found[fastest] == (accuracy, lowered)
    assert run.share == pytest.approx(1.0)


def test_a_confirmation_is_pooled_with_its_trial_by_timed_pairs():
    pooled = bench_table.pooled_speedup
    assert pooled(1.5, {"timing": {"pairs": 10}}, {"speedup": 1.5, "pairs": 30}) == pytest.approx(
        1.5
    )
    value = pooled(1.48, {"timing": {"pairs": 15}}, {"speedup": 1.672, "pairs": 36})
    assert value == pytest.approx(math.exp((15 * math.log(1.48) + 36 * math.log(1.672)) / 51))
    assert 1.48 < value < 1.672
    assert pooled(1.48, {}, {"speedup": 1.6}) == 1.6  # no pair counts: the confirmation


def test_shares_are_fractions_and_grow_with_the_budget(table):
    runs = bench.run_all(table, seeds=2, fractions=(0.1, 0.2, 0.4))
    assert {r.strategy for r in runs} == set(bench.STRATEGIES)
    assert all(0.0 <= r.share <= 1.0 + 1e-9 for r in runs)
    assert all(r.evaluated <= r.budget for r in runs)
    assert sum(r.strategy == "beam4" for r in runs) == 3  # deterministic: one seed
    assert sum(r.strategy == "tpe" for r in runs) == 6
    by = {(r.strategy, r.seed, r.fraction): r.share for r in runs}
    for (name, seed, fraction), share in by.items():
        if fraction == 0.4:  # a larger budget of the same seed extends the same search
            assert share >= by[(name, seed, 0.1)] - 1e-9
    rows = bench.summarize(runs)
    assert len(rows) == len(bench.STRATEGIES) * 3
    for row in rows:
        assert 0 <= row["min_share"] <= row["median_share"] <= 1
    best = bench.best_within(rows, 0.2)
    assert best["fraction"] <= 0.2
    assert best["median_share"] == max(r["median_share"] for r in rows if r["fraction"] <= 0.2)


def test_a_reference_above_every_config_and_bad_options_are_refused(table):
    with pytest.raises(QsearchError, match="reference point"):
        bench.replay(table, "random", 5, 0, (FP32 + 0.1, 1.0))
    with pytest.raises(QsearchError, match="beamK"):
        bench.replay(table, "beamx", 5, 0, (FP32 - 0.05, 1.0))
    with pytest.raises(QsearchError, match="beamK-unsettled"):
        bench.replay(table, "beam-unsettled", 5, 0, (FP32 - 0.05, 1.0))
    # the beam without its stop on ties, as --no-settle-ties builds it
    assert not bench.strategy_for("beam4-unsettled", 0, 0.01).settle_ties
    assert bench.strategy_for("beam4", 0, 0.01).settle_ties
    with pytest.raises(QsearchError, match="--sampler must be one of"):
        bench.replay(table, "cmaes", 5, 0, (FP32 - 0.05, 1.0))
    with pytest.raises(QsearchError, match="--budgets"):
        bench.parse_fractions("0.1,2")


def test_tiny_task_table_is_a_study_that_replays(tiny_task, tmp_path, capsys):
    space = SearchSpace.from_text(TINY_SPACE, "tiny.toml").resolve(tiny_task.operators)
    size = bench.table_size(space)
    assert size == 6
    url = f"sqlite:///{tmp_path}/table.db"
    name = bench.table_name(tiny_task.name, space.name)
    study = bench.open_table(name, url, space, tiny_task)
    evaluator = Evaluator(tiny_task, FAST)
    try:
        calls = iter(range(100))
        seen = []
        from search.runner import run_search
        from search.strategies import GridStrategy

        # killed after 2 trials, then the build is run again and finishes the table
        run_search(
            study, space, GridStrategy(), evaluator, size, should_stop=lambda: next(calls) >= 2
        )
        bench.fill_table(study, space, evaluator, on_trial=lambda s, outcome: seen.append(outcome))
    finally:
        evaluator.close()
    assert len(seen) == size - 2
    keys = [r.key for r in records(study)]
    assert sorted(keys) == sorted(c.key for c in all_configs(space))  # each config once

    # the table is an ordinary study: `qsearch show` opens it
    shown = CliRunner().invoke(app, ["show", "--study", name, "--storage", url])
    assert shown.exit_code == 0, shown.output
    assert "Pareto frontier" in shown.output

    # replay from the stored study alone (space rebuilt from its record), through main()
    table = bench.Table.from_study(optuna.load_study(study_name=name, storage=url))
    assert table.space.digest == study.user_attrs["space_digest"]
    reference = (table.fp32_accuracy - 1.0, 0.0)  # a tiny model's speedups may be below 1
    full = bench.replay(table, "grid", size, 0, reference)
    assert full.share == pytest.approx(1.0)
    argv = ["--storage", url, "--study", name, "--seeds", "2", "--ref-drop", "1"]
    assert bench.main([*argv, "--ref-speedup", "0", "--budgets", "0.2,0.5,1"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith('{"benchmark": "search_efficiency"'))
    data = json.loads(line)
    assert data["table"]["configs"] == size
    assert data["reference"]["speedup"] == 0.0
    assert {r["strategy"] for r in data["results"]} == set(bench.STRATEGIES)
    assert all(0 <= r["min_share"] <= r["median_share"] <= 1 for r in data["results"])
    assert data["best_within_20"]["fraction"] <= 0.2
    assert "Best at <= 20% budget" in out
