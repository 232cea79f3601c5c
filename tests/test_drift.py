"""The drift floor read from the study: configs confirmed in several passes say how far
this machine's minutes move a speedup beyond the rounds' own noise, and every view's
intervals are at least that wide."""

import html
import math

import numpy as np
import optuna
import pytest

from search.display import console, print_frontier
from search.drift import (
    DEFAULT_FLOOR,
    MIN_DOF,
    Z95,
    Stretch,
    confirmation_passes,
    floor_from,
    offset_sd,
)
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


def test_a_config_s_confirmation_passes_are_its_stretches():
    blocks = [
        {"source": "trial", "speedup": 2.0},  # too short to tell its noise from drift
        *rounds([1.8, 1.81, 1.79]),  # one confirmation pass
        {"source": "measure", "speedup": 1.9},
        *rounds([2.2, 2.21]),  # a second pass: its rounds count from 0 again
        *rounds([2.5]),  # a pass of one round has no spread to read its noise from
    ]
    passes = confirmation_passes(blocks)
    assert [round(math.exp(p.mean), 3) for p in passes] == [1.8, 2.205]
    assert passes[0].variance == pytest.approx(np.var(np.log([1.8, 1.81, 1.79]), ddof=1) / 3)


def test_the_floor_is_how_far_passes_differ_beyond_their_rounds_noise():
    # 8 configs, two passes each, whose means sit 4% above and below the config's own
    tight = [
        [Stretch(math.log(k) + 0.04, 1e-6), Stretch(math.log(k) - 0.04, 1e-6)] for k in range(1, 9)
    ]
    sd, configs, dof = offset_sd(tight)
    assert sd == pytest.approx(math.sqrt(2 * 0.04**2 - 1e-6)) and (configs, dof) == (8, 8)
    floor = floor_from(tight)
    assert floor.estimated and floor.floor == pytest.approx(math.expm1(Z95 * sd))
    assert "this machine's" in floor.describe() and "8 configs" in floor.describe()
    # the same means from noisy passes: their rounds explain the difference, no drift is left
    noisy = [[Stretch(s.mean, 0.01) for s in group] for group in tight]
    assert offset_sd(noisy)[0] == 0.0 and floor_from(noisy).floor == DEFAULT_FLOOR
    # configs confirmed once add nothing; a quiet machine keeps the default, never less
    quiet = floor_from([[Stretch(0.1, 0.0), Stretch(0.101, 0.0)], [Stretch(0.3, 0.0)]] * 6)
    assert quiet.estimated and quiet.floor == DEFAULT_FLOOR


def test_too_few_repeated_passes_keep_the_default():
    passes = [[Stretch(0.0, 0.0), Stretch(0.2, 0.0)]] * (MIN_DOF - 1)  # far apart, too few
    floor = floor_from(passes)
    assert not floor.estimated and floor.floor == DEFAULT_FLOOR
    assert f"{MIN_DOF} needed" in floor.describe()
    assert (
        floor_from([]).floor == DEFAULT_FLOOR
        and floor_from([[Stretch(0.3, 0.0)]]).offset_sd is None
    )


def drifting_study():
    """Eight configs each confirmed in two passes whose rounds agree closely but whose means
    are 20% apart: a machine whose minutes move speed far more than the 5% default allows."""
    study = optuna.create_study(directions=["maximize", "maximize"])
    study.set_user_attr("fp32_accuracy", 0.80)
    study.set_user_attr("settings", {"max_drop": 0.01, "threads": 1, "objective": "throughput"})
    for i in range(8):
        speed = 1.5 + 0.1 * i
        add(study, 0.80 - 0.002 * i, speed, f"config {i}")
        for level in (speed * 1.1, speed * 0.9):
            add_blocks(study, i, rounds([level * 1.001, level * 0.999] * 3))
    study.set_user_attr(ROUNDS, {"trials": list(range(8)), "logs": []})
    return study


def test_every_view_widens_intervals_to_the_floor_the_study_reads():
    study = drifting_study()
    floor = drift_floor(study)
    # each config: passes log(1.1 / 0.9) = 0.2 apart -> SD ~0.14 of a pass
    assert floor.estimated and floor.dof == 8 and floor.floor > 0.3
    for p in pooled_speeds(study).values():
        # 13 blocks: their t-interval (from the two passes' spread) is narrower than the floor
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
