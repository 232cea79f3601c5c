"""The fallback strategy on a synthetic landscape where accuracy and speed depend on which
groups are fp32: it reaches the bar in the fewest steps, returns the fastest config within
it (not the first that passes), keeps no state (resumes), and never repeats a config."""

import itertools

import optuna
import pytest

from search.errors import QsearchError
from search.objective import TrialResult
from search.ranking import within_drop
from search.report_groups import group_sections
from search.runner import run_search
from search.space import SearchSpace
from search.strategies import make_strategy
from search.strategies.base import records
from search.strategies.fallback import FallbackStrategy, fallback_path, speed_costs
from search.structure import Structure

FP32 = 0.80
GROUPS = ["layer0.qkv", "layer0.ffn_down", "layer1.qkv", "layer1.ffn_down", "head"]
STRUCTURE = Structure(
    layers=2,
    groups={g: (f"{g}/MatMul",) for g in GROUPS},
    weight_matmuls=tuple(f"{g}/MatMul" for g in GROUPS),
    activation_matmuls=(),
)
SPACE = "[quantization]\nmode = ['static']\noperators = ['MatMul']\n"


class GroupLandscape:
    """Accuracy drops by each quantized group's cost (`cost`), less where `relief` says a
    group costs little once another is fp32 (errors do not add up); every group kept fp32
    costs its `slow` in speed."""

    def __init__(self, cost, slow, relief=None):
        self.cost, self.slow, self.relief = cost, slow, relief or {}
        self.calls: list[str] = []
        self.fp32_accuracy = FP32

    def values(self, fp32_groups) -> tuple[float, float]:
        kept = set(fp32_groups)
        drop = 0.0
        for group, cost in self.cost.items():
            if group not in kept:
                relieved = self.relief.get(group)
                drop += 0.001 if relieved and relieved[0] in kept else cost
        return FP32 - drop, 3.0 - sum(self.slow[g] for g in kept)

    def evaluate(self, config, context=None) -> TrialResult:
        self.calls.append(config.key)
        accuracy, speed = self.values(config.fp32_groups)
        attrs = {"config": config.to_dict(), "config_key": config.key}
        return TrialResult(accuracy, speed, {**attrs, "description": config.describe()})

    def sensitivity(self, task, base) -> dict:
        """What leave-one-group-in measures here: each group's cost alone, most first."""
        rows = sorted(self.cost.items(), key=lambda kv: -kv[1])
        return {"base_key": base.key, "rows": [{"group": g, "mse": c} for g, c in rows]}


def setup(landscape):
    strategy = FallbackStrategy(max_drop=0.01, measure=landscape.sensitivity)
    space = SearchSpace.from_text(SPACE, "s.toml").resolve(["MatMul"], structure=STRUCTURE)
    space = strategy.bind(space, STRUCTURE)
    study = optuna.create_study(directions=["maximize", "maximize"])
    study.set_user_attr("fp32_accuracy", FP32)
    strategy.prepare(study, space, task=None)
    return strategy, space, study


def subsets():
    return [set(c) for r in range(len(GROUPS) + 1) for c in itertools.combinations(GROUPS, r)]


def fastest_within_bar(landscape) -> tuple[float, set]:
    ok = [(landscape.values(s)[1], s) for s in subsets() if within(landscape.values(s)[0])]
    return max(ok, key=lambda x: x[0])


def within(accuracy: float) -> bool:
    return bool(within_drop(accuracy, FP32, 0.01))


def best_measured(study) -> tuple[float, set]:
    measured = [r for r in records(study) if r.values and within(r.values[0])]
    best = max(measured, key=lambda r: r.values[1])
    return best.values[1], set(best.attrs["config"].get("fp32_groups", []))


def test_bind_adds_every_group_as_a_fallback_dimension():
    strategy, space, _ = setup(GroupLandscape({g: 0.0 for g in GROUPS}, {g: 0 for g in GROUPS}))
    assert set(space.fallback_groups) == set(GROUPS)
    assert isinstance(make_strategy(None, None, fallback=True), FallbackStrategy)
    with pytest.raises(QsearchError, match="--fallback"):
        make_strategy(4, None, fallback=True)


def test_reaches_the_bar_in_the_fewest_steps():
    cost = {GROUPS[0]: 0.03, GROUPS[1]: 0.02, GROUPS[2]: 0.006, GROUPS[3]: 0.004, GROUPS[4]: 0.001}
    landscape = GroupLandscape(cost, {g: 0.1 for g in GROUPS})
    strategy, space, study = setup(landscape)
    summary = run_search(study, space, strategy, landscape, trials=100)
    assert "finished" in summary.stopped_because
    assert len(landscape.calls) == len(set(landscape.calls))  # never evaluated twice
    fewest = min(len(s) for s in subsets() if within(landscape.values(s)[0]))
    path = fallback_path(study)
    reverts = [p for p in path if p["phase"] == "revert"]
    assert [within(p["accuracy"]) for p in reverts] == [False] * fewest + [True]
    assert len(reverts) == fewest + 1  # the base, then one more group per step
    assert reverts[-1]["groups"] == GROUPS[:fewest]  # most costly first
    assert best_measured(study) == fastest_within_bar(landscape)


def test_returns_the_fastest_within_the_bar_not_the_first_that_passes():
    # layer0.ffn_down costs 0.02 alone but 0.001 once layer0.qkv is fp32, and keeping it
    # fp32 is slow: the first config that passes keeps it fp32; trimming quantizes it again.
    cost = {GROUPS[0]: 0.03, GROUPS[1]: 0.02, GROUPS[2]: 0.015}
    slow = {GROUPS[0]: 0.1, GROUPS[1]: 0.5, GROUPS[2]: 0.05, GROUPS[3]: 0.0, GROUPS[4]: 0.0}
    landscape = GroupLandscape(cost, slow, relief={GROUPS[1]: (GROUPS[0],)})
    strategy, space, study = setup(landscape)
    run_search(study, space, strategy, landscape, trials=100)
    path = fallback_path(study)
    first_pass = next(p for p in path if p["accuracy"] is not None and within(p["accuracy"]))
    assert set(first_pass["groups"]) == set(GROUPS[:3])
    speed, groups = best_measured(study)
    assert (speed, groups) == fastest_within_bar(landscape)
    assert groups == {GROUPS[0], GROUPS[2]} and speed > first_pass["speedup"]
    assert strategy.walk(study, space).passed.config.fp32_groups == tuple(sorted(groups))


def test_resumes_from_the_study_alone():
    cost = {GROUPS[0]: 0.03, GROUPS[1]: 0.02, GROUPS[2]: 0.015}
    slow = {GROUPS[0]: 0.1, GROUPS[1]: 0.5, GROUPS[2]: 0.05, GROUPS[3]: 0.0, GROUPS[4]: 0.0}
    relief = {GROUPS[1]: (GROUPS[0],)}
    whole = GroupLandscape(cost, slow, relief)
    strategy, space, study = setup(whole)
    run_search(study, space, strategy, whole, trials=100)
    cut = GroupLandscape(cost, slow, relief)
    strategy, space, resumed = setup(cut)
    run_search(resumed, space, strategy, cut, trials=3)  # killed after 3 trials
    again = FallbackStrategy(max_drop=0.01, measure=cut.sensitivity)  # a new process
    run_search(resumed, space, again, cut, trials=100)
    assert cut.calls == whole.calls  # the same path, no config repeated
    assert best_measured(resumed) == best_measured(study)


def test_the_walk_needs_the_base_configs_sensitivity():
    landscape = GroupLandscape({GROUPS[0]: 0.03}, {g: 0 for g in GROUPS})
    strategy, space, study = setup(landscape)
    study.set_user_attr("sensitivity", {"base_key": "another", "rows": []})
    with pytest.raises(QsearchError, match="sensitivity"):
        strategy.propose(study, space)


def test_the_speed_cost_of_each_group_is_read_off_two_timed_steps_that_differ_by_it():
    cost = {GROUPS[0]: 0.03, GROUPS[1]: 0.02, GROUPS[2]: 0.015}
    slow = {GROUPS[0]: 0.1, GROUPS[1]: 0.5, GROUPS[2]: 0.05, GROUPS[3]: 0.0, GROUPS[4]: 0.0}
    landscape = GroupLandscape(cost, slow, relief={GROUPS[1]: (GROUPS[0],)})
    strategy, space, study = setup(landscape)
    run_search(study, space, strategy, landscape, trials=100)
    costs = speed_costs(fallback_path(study))
    assert set(costs) >= set(GROUPS[:3])  # every reverted group was moved alone once
    by_number = {r.number: r for r in records(study)}
    for group, measured in costs.items():
        quantized, fp32 = (by_number[n] for n in measured["trials"])
        q_groups = set(quantized.attrs["config"].get("fp32_groups", []))
        f_groups = set(fp32.attrs["config"].get("fp32_groups", []))
        assert f_groups - q_groups == {group} and q_groups <= f_groups
        assert measured["cost"] == pytest.approx(
            landscape.values(q_groups)[1] / landscape.values(f_groups)[1]
        )
    assert costs[GROUPS[1]]["cost"] > costs[GROUPS[0]]["cost"] > 1  # ffn_down: 0.5 slower
    page = group_sections(study)
    assert "speed-cost" in page and "fallback-path" in page and "sensitivity" in page
    assert page.count("plotly.js v") <= 1  # plotly's code at most once


def test_a_path_that_never_moved_a_group_alone_measures_no_speed_cost():
    path = [
        {"trial": 0, "phase": "revert", "groups": [], "accuracy": 0.7, "speedup": 3.0},
        {"trial": 1, "phase": "revert", "groups": ["a", "b"], "accuracy": 0.8, "speedup": 2.5},
    ]
    assert speed_costs(path) == {}
    path.append({"trial": 2, "phase": "trim", "groups": ["a"], "accuracy": 0.8, "speedup": 2.75})
    assert speed_costs(path) == {  # any two steps that differ by one group, not only neighbours
        "a": {"cost": 3.0 / 2.75, "trials": (0, 2)},
        "b": {"cost": 2.75 / 2.5, "trials": (2, 1)},
    }
