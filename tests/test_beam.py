import optuna
import pytest

from search.config import QuantConfig
from search.errors import QsearchError
from search.results import pareto_rows
from search.runner import evaluated_count, run_search
from search.space import SearchSpace, load_space
from search.strategies import BeamSearch, make_strategy
from search.strategies.base import Record, records
from search.trial_kind import TrialKind
from tests.fakes import FP32, FakeEvaluator, landscape

MODEL_OPS = ["Add", "Gather", "Gemm", "MatMul", "Mul", "Softmax", "Transpose", "Where"]


def new_study():
    study = optuna.create_study(directions=["maximize", "maximize"])
    study.set_user_attr("fp32_accuracy", FP32)
    return study


def test_first_round_is_every_single_operator_at_the_defaults():
    space = load_space("operators").resolve(MODEL_OPS)
    round_ = BeamSearch(width=2).next_round(new_study(), space)
    assert round_.number == 0
    assert sorted(c.operators for c in round_.pending) == [("Gather",), ("MatMul",), ("Transpose",)]


def test_beam_expands_the_best_by_one_operator_never_repeats_and_converges():
    space = load_space("operators").resolve(MODEL_OPS)
    study, evaluator = new_study(), FakeEvaluator()
    summary = run_search(study, space, BeamSearch(width=2), evaluator, trials=100)
    assert "finished" in summary.stopped_because
    assert len(evaluator.calls) == len(set(evaluator.calls))  # never evaluated twice
    keys = {r.key for r in records(study)}
    # the landscape rewards every operator, so the beam must reach the full set
    full = space.default_config(["Gather", "MatMul", "Transpose"])
    assert full.key in keys
    rounds = sorted({r.attrs["beam_round"] for r in records(study)})
    assert rounds == list(range(len(rounds))) and len(rounds) >= 3


def test_beam_keeps_accurate_configs_ahead_of_faster_collapsed_ones():
    space = SearchSpace.from_text(
        "[quantization]\nmode = ['static']\noperators = ['MatMul', 'Add']\n", "s.toml"
    ).resolve(MODEL_OPS)
    study, evaluator = new_study(), FakeEvaluator()
    run_search(study, space, BeamSearch(width=1), evaluator, trials=100)
    beam = BeamSearch(width=1)
    final = beam.next_round(study, space)
    kept = {r.key: r for r in records(study)}[final.kept[0]]
    assert "Add" not in kept.attrs["config"]["operators"]  # Add collapses accuracy to 0.5
    assert FP32 - kept.values[0] <= 0.01


class SlowGather(FakeEvaluator):
    """Quantizing Gather alone makes the model slower than fp32 (as on the default task)."""

    def evaluate(self, config, context=None):
        result = super().evaluate(config, context)
        if config.operators == ("Gather",):
            result.speedup = 0.97
        return result


def test_configs_dominated_by_fp32_itself_are_not_kept():
    space = SearchSpace.from_text(
        "[quantization]\nmode = ['dynamic']\noperators = ['MatMul', 'Gather']\n"
        "per_channel = [false, true]\nreduce_range = [false, true]\n",
        "s.toml",
    ).resolve(MODEL_OPS)
    study = new_study()
    run_search(study, space, BeamSearch(width=4), SlowGather(), trials=3)
    kept = BeamSearch(width=4).next_round(study, space).kept
    by_key = {r.key: r for r in records(study)}
    assert kept and all(by_key[k].values[1] > 1.0 for k in kept)  # width 4, yet Gather out
    slow = space.default_config(["Gather"]).key
    assert slow in by_key and slow not in kept
    # with nothing faster than fp32, the beam still keeps what it has
    alone = new_study()
    gather_only = SearchSpace.from_text(
        "[quantization]\nmode = ['dynamic']\noperators = ['Gather']\n", "g.toml"
    ).resolve(MODEL_OPS)
    run_search(alone, gather_only, BeamSearch(width=4), SlowGather(), trials=1)
    assert BeamSearch(width=4).next_round(alone, gather_only).kept == [slow]


def test_budget_stops_the_beam_and_rerunning_resumes_without_repeats():
    space = load_space("dynamic").resolve(MODEL_OPS)
    uninterrupted = new_study()
    run_search(uninterrupted, space, BeamSearch(width=3), FakeEvaluator(), trials=25)

    study, evaluator = new_study(), FakeEvaluator()
    for budget in (4, 9, 17, 25):  # the same command, killed and re-run
        run_search(study, space, BeamSearch(width=3), evaluator, trials=budget)
        assert evaluated_count(study) == budget
    assert len(evaluator.calls) == len(set(evaluator.calls)) == 25
    assert {r.key for r in records(study)} == {r.key for r in records(uninterrupted)}


def test_a_stopped_run_resumes_mid_round():
    space = load_space("dynamic").resolve(MODEL_OPS)
    study, evaluator = new_study(), FakeEvaluator()
    calls = iter(range(1000))
    run_search(
        study,
        space,
        BeamSearch(width=2),
        evaluator,
        trials=50,
        should_stop=lambda: next(calls) >= 5,
    )
    assert evaluated_count(study) == 5
    run_search(study, space, BeamSearch(width=2), evaluator, trials=50)
    assert len(evaluator.calls) == len(set(evaluator.calls))


def test_failed_trials_are_recorded_with_reason_and_not_retried():
    space = load_space("operators").resolve(MODEL_OPS)
    study = new_study()
    evaluator = FakeEvaluator(fail_when=lambda c: c.operators == ("Gather",))
    run_search(study, space, BeamSearch(width=2), evaluator, trials=100)
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(failed) == 1
    assert "synthetic" in failed[0].user_attrs["fail_reason"]
    assert len(evaluator.calls) == len(set(evaluator.calls))


@pytest.mark.parametrize("sampler", ["tpe", "random", "nsga2", "grid"])
def test_samplers_run_multi_objective_and_skip_duplicates(sampler):
    space = load_space("dynamic").resolve(MODEL_OPS)
    strategy = make_strategy(None, sampler, seed=0)
    study = optuna.create_study(directions=["maximize", "maximize"], sampler=strategy.sampler())
    study.set_user_attr("fp32_accuracy", FP32)
    evaluator = FakeEvaluator()
    run_search(study, space, strategy, evaluator, trials=12)
    assert evaluated_count(study) == 12
    assert len(evaluator.calls) == len(set(evaluator.calls))
    for r in records(study):
        if r.values and r.kind == TrialKind.MEASURED:
            config = QuantConfig.from_dict(r.attrs["config"])
            assert r.values == pytest.approx(landscape(config))


def test_strategy_options_are_checked():
    with pytest.raises(QsearchError, match="--sampler must be one of"):
        make_strategy(None, "cmaes")
    with pytest.raises(QsearchError, match="either --beam"):
        make_strategy(2, "tpe")
    with pytest.raises(QsearchError, match="at least 1"):
        make_strategy(0, None)


class Uint8Slow(FakeEvaluator):
    """The fake landscape, except that uint8 weights are 20% slower and no more accurate:
    the move the beam repeated on a VNNI CPU (0.91-0.99x) after it had lost every time."""

    def evaluate(self, config, context=None):
        result = super().evaluate(config, context)
        if config.weights_dtype == "uint8":
            result = type(result)(result.accuracy - 0.001, result.speedup * 0.8, result.attrs)
        return result


def uint8_trials(deferral: bool) -> tuple[int, optuna.Study]:
    space = load_space("dynamic").resolve(MODEL_OPS)
    study = new_study()
    strategy = make_strategy(4, None, defer_moves=deferral)  # what --no-defer-moves builds
    run_search(study, space, strategy, Uint8Slow(), trials=40)
    configs = [QuantConfig.from_dict(r.attrs["config"]) for r in records(study) if r.values]
    return sum(c.weights_dtype == "uint8" for c in configs), study


def test_the_beam_defers_a_move_that_lost_every_time():
    with_deferral, study = uint8_trials(True)
    without, plain = uint8_trials(False)
    assert with_deferral < without and "deferred_moves" not in plain.user_attrs
    # The same frontier (as points: the deferring beam may hold a second config at a point)
    front = {tuple(r) for r in pareto_rows(study)[["accuracy", "speedup"]].to_numpy()}
    assert front == {tuple(r) for r in pareto_rows(plain)[["accuracy", "speedup"]].to_numpy()}
    deferred = study.user_attrs["deferred_moves"]
    assert "weights_dtype int8 -> uint8" in deferred
    assert "lost" in deferred["weights_dtype int8 -> uint8"]
    assert "weights_dtype uint8 -> int8" not in deferred


def test_a_move_between_configs_is_one_dimension_or_none():
    from search.strategies.beam import move_between

    a = QuantConfig(operators=("MatMul",))
    assert move_between(a, a.replace(weights_dtype="uint8")) == "weights_dtype int8 -> uint8"
    assert move_between(a, a.replace(operators=["Gather", "MatMul"])) == "operators +Gather"
    assert move_between(a, a.replace(per_channel=True, reduce_range=True)) is None


def _record(number: int, speedup: float, half_width: float | None, accuracy: float = 0.8):
    attrs = {}
    if half_width is not None:  # a 95% interval symmetric in log space, as pooled ones are
        attrs = {"speedup_low": speedup / half_width, "speedup_high": speedup * half_width}
    state = optuna.trial.TrialState.COMPLETE
    return Record(number, str(number), state, (accuracy, speedup), attrs, TrialKind.MEASURED)


def _tries(ratios, half_width):
    """Measured pairs (a, a with reduce_range) whose moved config reads `ratio` of a's."""
    out = {}
    for i, ratio in enumerate(ratios):
        a = QuantConfig(operators=("MatMul",), per_channel=bool(i % 2), weights_symmetric=i < 2)
        out[f"a{i}"] = (a, _record(2 * i, 2.5, half_width))
        out[f"b{i}"] = (a.replace(reduce_range=True), _record(2 * i + 1, 2.5 * ratio, half_width))
    return out


MOVE = "reduce_range False -> True"


def test_a_move_is_deferred_on_its_tries_taken_together():
    beam = BeamSearch()
    # Each 7% loss sits inside the two 5% intervals of its pair, so no single try separates;
    # three of them together do (bound ~3% below zero).
    overlapping = beam.deferred(_tries([0.93, 0.93, 0.93], 1.05))
    assert MOVE in overlapping and "7.0% slower on average" in overlapping[MOVE]
    assert MOVE not in beam.deferred(_tries([0.93, 0.93], 1.05))  # two tries are too few
    assert MOVE not in beam.deferred(_tries([0.93, 1.01, 0.93], 1.05))  # one try won
    assert MOVE not in beam.deferred(_tries([0.99, 0.99, 0.99], 1.05))  # losses within noise
    assert MOVE in beam.deferred(_tries([0.99, 0.99, 0.99], None))  # exact values: they count


SMALL_DYNAMIC = """
name = "small-dynamic"
description = "MatMul only: four yes/no dimensions, so the beam runs out of moves."
[quantization]
mode = ["dynamic"]
operators = ["MatMul"]
per_channel = [false, true]
reduce_range = [false, true]
weights_symmetric = [true, false]
weights_dtype = ["int8", "uint8"]
"""


class Climb(FakeEvaluator):
    """Each of per-channel, reduce_range and asymmetric weights is 5% faster at the same
    accuracy, uint8 weights 20% slower: the beam climbs to the config with all three, and
    then only the deferred move is left."""

    def evaluate(self, config, context=None):
        result = super().evaluate(config, context)
        steps = config.per_channel + config.reduce_range + (not config.weights_symmetric)
        speedup = 1.5 * 1.05**steps * (0.8 if config.weights_dtype == "uint8" else 1.0)
        return type(result)(0.8, speedup, result.attrs)


def test_when_only_deferred_moves_are_left_one_member_tries_them():
    space = SearchSpace.from_text(SMALL_DYNAMIC).resolve(MODEL_OPS)
    study = new_study()
    run_search(study, space, make_strategy(4, None), Climb(), trials=60)
    assert "weights_dtype int8 -> uint8" in study.user_attrs["deferred_moves"]
    done = [r for r in records(study) if r.values]
    configs = {r.number: QuantConfig.from_dict(r.attrs["config"]) for r in done}
    assert sum(c.weights_dtype == "int8" for c in configs.values()) == 8  # every int8 config
    last = max(r.attrs["beam_round"] for r in done)
    final = [configs[r.number] for r in done if r.attrs["beam_round"] == last]
    # Nothing but the deferred move was left: it is tried once, on the best member, and as
    # it loses again the beam stops instead of trying it on the other three.
    assert [c.weights_dtype for c in final] == ["uint8"]
    assert BeamSearch().next_round(study, space).converged


def test_members_behind_a_deferred_move_are_not_expanded():
    # Width 16 keeps every config of the small space, uint8 ones too: their neighbours are
    # uint8 configs one other move on, which the deferral alone does not stop.
    space = SearchSpace.from_text(SMALL_DYNAMIC).resolve(MODEL_OPS)
    counts = {}
    for defer in (True, False):
        study = new_study()
        strategy = make_strategy(16, None, defer_moves=defer)
        run_search(study, space, strategy, Uint8Slow(), trials=60)
        dtypes = [QuantConfig.from_dict(r.attrs["config"]).weights_dtype for r in records(study)]
        counts[defer] = (dtypes.count("int8"), dtypes.count("uint8"))
    assert counts[False] == (8, 8)  # the plain beam measures every config of the space
    assert counts[True][0] == 8 and counts[True][1] < 8


class Noisy(FakeEvaluator):
    """Every config of the small space at 1.5x give or take 1%, each with a 95% interval of
    +-5%, as a 12 s trial reads here: per-channel and asymmetric weights read a little higher
    by chance, so each round pushes out a member that no timing could tell from it. Reduce
    range is 20% faster (intervals apart): a real step the beam must still take."""

    def evaluate(self, config, context=None):
        result = super().evaluate(config, context)
        speedup = 1.5 * (1 + 0.01 * config.per_channel + 0.01 * (not config.weights_symmetric))
        speedup *= 1.2 if config.reduce_range else 1.0
        attrs = {**result.attrs, "speedup_low": speedup * 0.95, "speedup_high": speedup * 1.05}
        return type(result)(0.8, speedup, attrs)


def test_the_beam_stops_when_a_round_changes_its_members_only_by_ties():
    space = SearchSpace.from_text(SMALL_DYNAMIC).resolve(MODEL_OPS)
    finals = {}
    for settle in (True, False):
        study = new_study()
        strategy = make_strategy(1, None, settle_ties=settle)  # what --no-settle-ties builds
        run_search(study, space, strategy, Noisy(), trials=60)
        done = [r for r in records(study) if r.values]
        configs = [QuantConfig.from_dict(r.attrs["config"]) for r in done]
        assert BeamSearch(width=1, settle_ties=settle).next_round(study, space).converged
        finals[settle] = (len(done), max(configs, key=lambda c: c.reduce_range).reduce_range)
    # Both took the clear step to reduce_range; only the beam without the rule went on
    # climbing the 1% steps, a round of neighbours each.
    assert finals[True][1] and finals[False][1]
    assert finals[True][0] < finals[False][0]


def test_only_ties_compares_each_newcomer_with_the_member_it_pushes_out():
    from search.strategies.beam import only_ties

    def record(key, accuracy, speedup, spread=0.05):
        attrs = {"speedup_low": speedup * (1 - spread), "speedup_high": speedup * (1 + spread)}
        return Record(0, key, optuna.trial.TrialState.COMPLETE, (accuracy, speedup), attrs, None)

    done = {
        "a": record("a", 0.80, 1.50),
        "b": record("b", 0.80, 1.55),  # reaches a's interval: a tie
        "c": record("c", 0.80, 1.80),  # clearly faster than a
        "d": record("d", 0.70, 1.56),  # a tie in speed, but past the 1-point bar
    }
    assert only_ties(["b"], ["a"], done, FP32, 0.01)
    assert only_ties(["a"], ["a"], done, FP32, 0.01)
    assert not only_ties(["c"], ["a"], done, FP32, 0.01)
    assert not only_ties(["d"], ["a"], done, FP32, 0.01)
    assert not only_ties(["b", "a"], ["a"], done, FP32, 0.01)  # the beam grew
    assert not only_ties(["b"], ["a"], done, FP32, 0.01, behind=frozenset({"a"}))
