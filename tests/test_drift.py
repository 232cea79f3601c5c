"""The drift floor read from the study: configs timed in separate stretches (trial,
confirmation pass, `measure` runs) say how far this machine's minutes move a speedup, and
every view's intervals are at least that wide."""

import html
import math

import optuna
import pytest

from search.display import console, print_frontier
from search.drift import DEFAULT_FLOOR, MIN_DOF, Z95, floor_from, offset_sd, stretch_means
from search.note import frontier_note
from search.pooled import ROUNDS, add_blocks
from search.report import render_html
from search.results import drift_floor, pooled_speeds
from tests.test_pooled import add


def rounds(speedups, first_round=0):
    return [
        {"source": "round", "round": first_round + r, "speedup": s, "pairs": 3}
        for r, s in enumerate(speedups)
    ]


def test_blocks_group_into_the_stretches_that_timed_them():
    trial = {"source": "trial", "speedup": 2.0}
    blocks = [
        trial,
        *rounds([1.8, 1.8, 1.8]),  # one confirmation pass
        *rounds([2.2, 2.2]),  # a second pass: its rounds count from 0 again
        {"source": "measure", "speedup": 1.9},
        {"source": "measure", "speedup": 2.1},  # each measure run is its own stretch
    ]
    means = stretch_means(blocks)
    assert means == pytest.approx([math.log(x) for x in (2.0, 1.8, 2.2, 1.9, 2.1)])


def test_the_floor_is_the_spread_of_stretches_of_one_config():
    # 8 configs, each read 4% above and 4% below its own level in two stretches (log scale)
    stretches = [[math.log(k) + 0.04, math.log(k) - 0.04] for k in range(1, 9)]
    sd, configs, dof = offset_sd(stretches)
    assert sd == pytest.approx(math.sqrt(2) * 0.04) and (configs, dof) == (8, 8)
    floor = floor_from(stretches)
    assert floor.estimated and floor.floor == pytest.approx(math.expm1(Z95 * sd))
    assert "this machine's" in floor.describe() and "8 configs" in floor.describe()
    # configs measured once add nothing; a quiet machine keeps the default, never less
    quiet = floor_from([[0.1, 0.101], [0.2, 0.199], [0.3]] * 4)
    assert quiet.estimated and quiet.floor == DEFAULT_FLOOR


def test_too_few_repeated_stretches_keep_the_default():
    stretches = [[0.0, 0.2]] * (MIN_DOF - 1)  # far apart, but too little evidence
    floor = floor_from(stretches)
    assert not floor.estimated and floor.floor == DEFAULT_FLOOR
    assert f"{MIN_DOF} needed" in floor.describe()
    assert floor_from([]).floor == DEFAULT_FLOOR and floor_from([[0.3]]).offset_sd is None


def drifting_study():
    """Eight configs whose confirmation pass read each 10% away from its trial: a machine
    whose minutes move speed far more than the 5% default floor allows for."""
    study = optuna.create_study(directions=["maximize", "maximize"])
    study.set_user_attr("fp32_accuracy", 0.80)
    study.set_user_attr("settings", {"max_drop": 0.01, "threads": 1, "objective": "throughput"})
    for i in range(8):
        trial_speed = 1.5 + 0.1 * i
        add(study, 0.80 - 0.002 * i, trial_speed, f"config {i}")
        confirmed = trial_speed * (0.9 if i % 2 else 1.1)
        add_blocks(study, i, rounds([confirmed * 1.001, confirmed * 0.999] * 3))
    study.set_user_attr(ROUNDS, {"trials": list(range(8)), "logs": []})
    return study


def test_every_view_widens_intervals_to_the_floor_the_study_reads():
    study = drifting_study()
    floor = drift_floor(study)
    # each config: log(trial) and log(confirmation) ~0.095 apart -> SD ~0.067 of a stretch
    assert floor.estimated and floor.dof == 8 and floor.floor > 0.12
    for p in pooled_speeds(study).values():
        # 7 blocks whose t-interval from their spread would be narrower than the floor
        assert p.high / p.speedup == pytest.approx(1 + floor.floor)
        assert p.speedup / p.low == pytest.approx(1 + floor.floor)
    text = f"+-{100 * floor.floor:.1f}% (this machine's"
    with console.capture() as captured:
        print_frontier(study, 0.01)
    assert text in " ".join(captured.get().split())
    assert text in frontier_note(study, 0.01) and html.escape(text) in render_html(study, 0.01)


def test_a_study_timed_once_per_config_keeps_the_default_floor():
    study = drifting_study()
    fresh = optuna.create_study(directions=["maximize", "maximize"])
    for t in study.trials:
        fresh.add_trial(t)  # the same trials, no confirmation
    assert drift_floor(fresh).floor == DEFAULT_FLOOR and not drift_floor(fresh).estimated
    assert "the default" in frontier_note(fresh, 0.01)
