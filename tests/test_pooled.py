"""Pooled speed: every timed block of a config pooled into one speedup and interval, and the
one frontier every view (report, show, export --best, the dashboard's note) reads."""

import math
from types import SimpleNamespace

import optuna
import pytest
from optuna.distributions import CategoricalDistribution

from search.cli_study import store_measurement
from search.display import console, print_frontier
from search.export import choose_trial, model_card
from search.note import frontier_note, save_frontier_note
from search.pooled import FLOOR, add_blocks, block, pool
from search.report import render_html
from search.results import best_row, pareto_rows, pooled_speeds, trial_rows
from search.worker import worker_info


def speed(ratio, pairs=12):
    return SimpleNamespace(
        ratio=ratio, low=ratio / 1.05, high=ratio * 1.05, pairs=pairs, loaded=False, seconds=12.0
    )


def add(study, accuracy, speedup, name, cpu=None):
    study.add_trial(
        optuna.trial.create_trial(
            values=[accuracy, speedup],
            params={"mode": "dynamic"},
            distributions={"mode": CategoricalDistribution(["dynamic"])},
            user_attrs={
                "config": {"mode": "dynamic", "operators": ["MatMul"]},
                "speedup_low": speedup / 1.05,
                "speedup_high": speedup * 1.05,
                "timing": {"pairs": 12},
                "description": name,
                "worker": {"cpu": cpu or "some cpu"},
            },
        )
    )


def test_one_block_is_its_own_estimate():
    p = pool([block(speed(2.0), "trial")])
    assert (p.speedup, p.low, p.high, p.blocks) == (2.0, 2.0 / 1.05, 2.0 * 1.05, 1)


def test_blocks_pool_by_their_spread_never_below_the_drift_floor():
    close = pool([block(speed(r), "round") for r in (2.0, 2.001, 1.999, 2.0)])
    assert close.low == pytest.approx(close.speedup / (1 + FLOOR))
    spread = pool([block(speed(r), "round") for r in (1.6, 2.4)])
    assert spread.speedup == pytest.approx(math.sqrt(1.6 * 2.4))
    assert spread.high / spread.speedup > 2  # two blocks far apart: a wide t-interval
    weighted = pool([block(speed(1.0, pairs=30), "trial"), block(speed(2.0, pairs=10), "x")])
    assert weighted.speedup == pytest.approx(math.exp(0.25 * math.log(2.0)))


def two_configs():
    """Trial 0 read 2.0x in its trial, trial 1 1.8x; re-measured, 0 is really ~1.5x."""
    study = optuna.create_study(directions=["maximize", "maximize"])
    study.set_user_attr("fp32_accuracy", 0.80)
    study.set_user_attr("settings", {"max_drop": 0.01, "threads": 1, "objective": "throughput"})
    add(study, 0.800, 2.0, "lucky")
    add(study, 0.800, 1.8, "steady")
    add_blocks(study, 0, [block(speed(1.5), "measure") for _ in range(4)])
    return study


def test_later_measurements_are_pooled_into_the_rows():
    rows = trial_rows(two_configs()).set_index("trial")
    assert rows.loc[0, "blocks"] == 5 and rows.loc[0, "first_speedup"] == 2.0
    assert rows.loc[0, "speedup"] == pytest.approx(
        math.exp((math.log(2.0) + 4 * math.log(1.5)) / 5)
    )
    assert rows.loc[1, "speedup"] == 1.8


def test_every_view_names_the_same_best_config(capsys):
    study = two_configs()
    best = best_row(study, 0.01)
    assert best["trial"] == 1  # trial values alone would say trial 0
    assert list(pareto_rows(study)["trial"]) == [1]
    assert choose_trial(study, None, best=True).number == 1
    with console.capture() as captured:
        print_frontier(study, 0.01)
    assert "trial 1, 1.800x" in captured.get() and "blocks" in captured.get()
    assert "Best within 1 point(s) of fp32: trial 1, 1.800x" in frontier_note(study, 0.01)
    assert "Best within 1 point(s) of fp32: trial 1, 1.800x" in render_html(study, 0.01)


def test_the_note_is_where_optuna_dashboard_reads_it():
    from optuna_dashboard import get_note

    study = two_configs()
    save_frontier_note(study, 0.01)
    save_frontier_note(study, 0.01)  # a later write replaces the note
    assert get_note(study) == frontier_note(study, 0.01)
    assert "| 1 | 0.8000 |" in get_note(study)


def test_a_measure_run_is_stored_back_when_it_measured_the_same_thing():
    study = optuna.create_study(directions=["maximize", "maximize"])
    study.set_user_attr("fp32_accuracy", 0.80)
    study.set_user_attr("settings", {"max_drop": 0.01, "threads": 1, "objective": "throughput"})
    add(study, 0.80, 2.0, "here", cpu=worker_info(1)["cpu"])
    trial = study.trials[0]
    said = store_measurement(study, trial, speed(1.9), 1, "throughput")
    assert "pools 2 timed blocks" in said and pooled_speeds(study)[0].blocks == 2
    said = store_measurement(study, trial, speed(1.9), 2, "throughput")  # other threads
    assert said.startswith("Not stored") and pooled_speeds(study)[0].blocks == 2


def test_the_model_card_gives_the_pooled_speedup():
    study = two_configs()
    from search.config import QuantConfig

    card = model_card(study.trials[0], QuantConfig(), "accuracy", 0.8, pooled_speeds(study)[0])
    assert "5 timed blocks pooled; the trial alone read 2.000x" in card


def test_racing_reads_the_pooled_frontier_too():
    from search.context import trial_context

    study = two_configs()
    pooled = pooled_speeds(study)
    assert sorted(trial_context(study).frontier) == [(0.8, pooled[1].low)]


def test_a_best_config_not_shown_faster_than_fp32_says_so_in_every_view():
    # what an AMD EPYC Zen 1 reads for every int8 config of the default task: ~1.0x
    study = optuna.create_study(directions=["maximize", "maximize"])
    study.set_user_attr("fp32_accuracy", 0.80)
    study.set_user_attr("settings", {"max_drop": 0.01, "threads": 1, "objective": "throughput"})
    add(study, 0.800, 1.04, "about fp32")  # interval 0.990-1.092
    caveat = "not clearly faster than fp32 where it was measured (its interval reaches 0.990x)"
    with console.capture() as captured:
        print_frontier(study, 0.01)
    assert caveat in " ".join(captured.get().split())
    assert caveat in frontier_note(study, 0.01) and caveat in render_html(study, 0.01)
    # a best whose interval is above 1 carries no caveat
    assert "not clearly faster" not in frontier_note(two_configs(), 0.01)


def test_the_views_say_how_closely_the_last_confirmation_told_configs_apart(capsys):
    """Three candidates in four rounds: 0 and 1 differ by exactly +-2% round to round, 2 by
    more; the line gives the median half-width of the three pairs' same-round intervals."""
    from search.pooled import ROUNDS, resolution, same_round_interval
    from search.results import floor_line

    d = math.log(1.02)
    logs = [[0.5 + d, 0.5, 0.3], [0.5 - d, 0.5, 0.4], [0.5 + d, 0.5, 0.2], [0.5 - d, 0.5, 0.5]]
    halves = sorted(
        math.log(r[2] / r[1]) / 2
        for r in (same_round_interval([0, 1, 2], logs, a, b) for a, b in ((0, 1), (0, 2), (1, 2)))
    )
    half, rounds = resolution([0, 1, 2], logs)
    assert rounds == 4 and half == pytest.approx(math.expm1(halves[1]))
    # 0 against 1: diffs +-d, SD d * sqrt(4/3), t(3) = 3.182, over sqrt(4)
    expected01 = 3.182446 * d * math.sqrt(4 / 3) / 2
    assert min(halves) == pytest.approx(expected01, rel=1e-3)  # t975 is an approximation
    assert resolution([0, 1], [[0.1, 0.2]]) is None  # one round: nothing to read
    study = two_configs()
    assert "last confirmation pass" not in floor_line(study)  # none yet
    study.set_user_attr(ROUNDS, {"trials": [0, 1, 9], "logs": logs})
    line = floor_line(study)
    assert f"(4 rounds) knew the ratio between two of its configs to +-{100 * half:.1f}%" in line
    assert line in render_html(study, 0.01).replace("&#x27;", "'")
    with console.capture() as captured:
        print_frontier(study, 0.01)
    assert f"+-{100 * half:.1f}%" in captured.get()
    assert f"+-{100 * half:.1f}%" in frontier_note(study, 0.01)
