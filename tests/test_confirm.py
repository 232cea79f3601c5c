"""Confirmation re-times the frontier round-robin until, read with the new blocks, it is all
confirmed; the order and ties of its candidates come from ratios of the same rounds."""

import math
from types import SimpleNamespace

import optuna
import pytest
from optuna.distributions import CategoricalDistribution

from search.confirm import DIRECT_SPAN, confirm_frontier, confirmation_round, pass_slot
from search.results import confirmations, pareto_rows, trial_rows


class Rounds:
    """Times configs as an evaluator's `retime_round` does, with a true speed per config
    (by its excluded node) and a drift of the machine that changes from round to round and
    hits every config of a round alike."""

    def __init__(self, true, drift=(1.0,), wobble=0.0):
        self.true, self.drift, self.wobble = true, drift, wobble
        self.rounds: list[list[str]] = []
        self.seconds: list[float] = []
        self.fresh: list[bool] = []
        self.turns: list[tuple[int, int]] = []  # each round's (rotate, span)
        self.renewed: list[int] = []  # rounds timed before each renewal
        self.ended = 0

    def renew(self):
        self.renewed.append(len(self.rounds))

    def retime_round(self, configs, seconds=None, fresh_sessions=False, span=0, rotate=0):
        r = len(self.rounds)
        self.rounds.append([c.excluded_nodes[0] for c in configs])
        self.turns.append((rotate, span))
        self.seconds.append(seconds)
        self.fresh.append(fresh_sessions)
        out = []
        names = sorted(self.true)
        for c in configs:
            k = names.index(c.excluded_nodes[0])  # a config's own noise, even over 6 rounds
            jitter = 1 + self.wobble * (1 if (r + k) % 2 else -1)
            ratio = self.true[c.excluded_nodes[0]] * self.drift[r % len(self.drift)] * jitter
            out.append(
                SimpleNamespace(
                    ratio=ratio, low=ratio / 1.02, high=ratio * 1.02, loaded=False, pairs=12
                )
            )
        return out

    def end_rounds(self):
        self.ended += 1


def add(study, accuracy, speedup, node, half=0.03, reference=None):
    study.add_trial(
        optuna.trial.create_trial(
            values=[accuracy, speedup],
            params={"mode": "dynamic"},
            distributions={"mode": CategoricalDistribution(["dynamic"])},
            user_attrs={
                "config": {"mode": "dynamic", "operators": ["MatMul"], "excluded_nodes": [node]},
                "speedup_low": speedup * (1 - half),
                "speedup_high": speedup * (1 + half),
                "description": node,
                **({"reference": reference} if reference else {}),
            },
        )
    )


def new_study():
    study = optuna.create_study(directions=["maximize", "maximize"])
    study.set_user_attr("fp32_accuracy", 0.8)
    return study


def test_a_lucky_config_is_demoted_and_the_new_frontier_is_confirmed_too():
    study = new_study()
    add(study, 0.80, 1.60, "lucky")  # really 1.2
    add(study, 0.80, 1.45, "steady")  # dominated at first, frontier once 0 is demoted
    add(study, 0.70, 1.30, "poor")
    rounds = Rounds({"lucky": 1.2, "steady": 1.45, "poor": 1.30})
    assert set(pareto_rows(study)["trial"]) == {0}
    done = confirm_frontier(study, rounds, seconds=36.0)
    assert done[0]["speedup"] == pytest.approx(1.2)
    front = pareto_rows(study)
    assert list(front["trial"]) == [1] and front["confirmed"].all()
    assert set(confirmations(study)) >= set(front["trial"])
    assert rounds.fresh and all(rounds.fresh)  # every round on new sessions
    assert rounds.renewed == [0]  # one new process for the confirmation, before its first round
    assert [r for r in rounds.rounds if "lucky" in r] and "poor" not in sum(rounds.rounds, [])
    assert rounds.ended == 2  # two passes, each closing its sessions
    assert all(c["seconds"] == pytest.approx(36.0) for c in done.values())


def test_every_frontier_config_is_confirmed_however_many_there_are():
    """Twelve configs trading accuracy for speed are all on the frontier: every one is
    confirmed (the old cap of eight left frontier configs on their trial values)."""
    study = new_study()
    true = {}
    for i in range(12):
        add(study, 0.80 - 0.01 * i, 1.2 + 0.1 * i, f"n{i}")
        true[f"n{i}"] = 1.2 + 0.1 * i
    rounds = Rounds(true)
    confirm_frontier(study, rounds, seconds=12.0)
    front = pareto_rows(study)
    assert len(front) == 12 and front["confirmed"].all()
    # round-robin: every round times every candidate once, fastest first (the direct pairs
    # are between neighbours in that order), its turns starting one further along
    fastest_first = sorted(true, key=true.get, reverse=True)
    assert rounds.rounds == [fastest_first] * 6
    assert rounds.turns == [(r, DIRECT_SPAN) for r in range(6)]
    assert rounds.seconds == [pytest.approx(pass_slot(12.0, 12, 6))] * 6


def test_the_total_time_of_a_pass_is_bounded():
    assert pass_slot(36.0, 4, 6) * 4 * 6 == pytest.approx(4 * 36.0)
    assert pass_slot(36.0, 40, 6) * 40 * 6 == pytest.approx(12 * 36.0)


def test_order_and_ties_come_from_ratios_in_the_same_rounds():
    """The machine drifts by +-8% between rounds; two configs 2% apart keep their order and
    are told apart by their same-round ratio, though their pooled intervals overlap."""
    study = new_study()
    add(study, 0.80, 1.50, "a")
    add(study, 0.801, 1.48, "b")  # a little more accurate, so both are on the frontier
    rounds = Rounds({"a": 1.47, "b": 1.50}, drift=(1.08, 0.92, 1.0, 1.05, 0.95, 1.0), wobble=0.002)
    confirm_frontier(study, rounds, seconds=12.0)
    front = pareto_rows(study)
    assert list(front["trial"]) == [1]  # b is faster and more accurate: a is dominated
    rows = trial_rows(study).set_index("trial")
    assert rows.loc[0, "speedup_high"] > rows.loc[1, "speedup_low"]  # intervals overlap


def test_close_configs_measured_in_the_same_rounds_are_not_a_tie():
    study = new_study()
    add(study, 0.80, 1.50, "a")
    add(study, 0.79, 1.53, "b")
    rounds = Rounds({"a": 1.50, "b": 1.53}, drift=(1.08, 0.92, 1.0, 1.05, 0.95, 1.0), wobble=0.002)
    confirm_frontier(study, rounds, seconds=12.0)
    front = pareto_rows(study)
    assert list(front["trial"]) == [1, 0]
    assert front["speedup_high"].iloc[1] > front["speedup_low"].iloc[0]  # they overlap...
    assert list(front["tie"]) == ["", ""]  # ...but the same rounds tell them apart
    ratio = front["speedup"].iloc[0] / front["speedup"].iloc[1]
    assert ratio == pytest.approx(1.53 / 1.50, rel=1e-3)  # the rounds' ratio, not the levels'


def test_configs_the_rounds_cannot_tell_apart_tie():
    study = new_study()
    add(study, 0.80, 1.50, "a")
    add(study, 0.79, 1.51, "b")
    rounds = Rounds({"a": 1.50, "b": 1.501}, drift=(1.08, 0.92, 1.0), wobble=0.01)
    confirm_frontier(study, rounds, seconds=12.0)
    assert list(pareto_rows(study)["tie"]) == ["tie 1", "tie 1"]


def test_a_confirmed_frontier_is_not_confirmed_again():
    study = new_study()
    add(study, 0.80, 1.50, "a")
    rounds = Rounds({"a": 1.5})
    confirm_frontier(study, rounds, seconds=12.0)
    timed = len(rounds.rounds)
    confirm_frontier(study, rounds, seconds=12.0)
    assert len(rounds.rounds) == timed


def test_a_config_that_fails_in_every_round_is_recorded_and_the_others_confirmed():
    class Failing(Rounds):
        def retime_round(self, configs, seconds=None, fresh_sessions=False, **_):
            out = super().retime_round(configs, seconds)
            return [
                "onnxruntime refused it" if c.excluded_nodes[0] == "bad" else s
                for c, s in zip(configs, out, strict=True)
            ]

    study = new_study()
    add(study, 0.80, 1.50, "a")
    add(study, 0.79, 1.60, "bad")
    done = confirm_frontier(study, Failing({"a": 1.5, "bad": 1.6}), seconds=12.0)
    assert done[1] == {
        "error": "onnxruntime refused it",
        **{k: done[1][k] for k in done[1] if k != "error"},
    }
    assert "speedup" in done[0] and not math.isnan(done[0]["speedup"])


def test_a_pass_cut_short_is_run_again_when_the_search_resumes():
    class Stopped(Rounds):
        def retime_round(self, configs, seconds=None, fresh_sessions=False, **_):
            if len(self.rounds) == 2:
                raise KeyboardInterrupt  # the user stops the search in the third round
            return super().retime_round(configs, seconds)

    study = new_study()
    add(study, 0.80, 1.50, "a")
    stopped = Stopped({"a": 1.5})
    with pytest.raises(KeyboardInterrupt):
        confirm_frontier(study, stopped, seconds=12.0)
    assert stopped.ended == 1  # its sessions are closed all the same
    rounds = Rounds({"a": 1.5})
    confirm_frontier(study, rounds, seconds=12.0)
    assert len(rounds.rounds) == 6


def test_a_round_runs_in_the_process_it_finds():
    """The confirmation starts its one new process itself (`confirm_frontier`), and
    `benchmarks/confirm_process.py` times its aged arm in the child it aged."""
    rounds = Rounds({"a": 1.5, "b": 1.2})
    configs = [
        SimpleNamespace(excluded_nodes=["a"], key="a"),
        SimpleNamespace(excluded_nodes=["b"], key="b"),
    ]
    kept = [confirmation_round(rounds, configs, r, 1.0) for r in range(2)]
    assert rounds.renewed == [] and [s.ratio for s in kept[1]] == [1.5, 1.2]  # configs' order


def test_the_fastest_preset_is_timed_in_the_same_rounds_as_the_best_config(capsys):
    """Optimum's fastest preset is off the frontier and outside its intervals, yet rides
    along in the confirmation, so the views give the best config's ratio to it from the
    same rounds; the slower preset is left out."""
    from search.display import console, print_frontier
    from search.note import frontier_note
    from search.report import render_html
    from search.results import versus_preset

    study = new_study()
    add(study, 0.80, 2.0, "best")
    add(study, 0.78, 2.4, "fast but inaccurate")
    add(study, 0.80, 1.6, "avx512 preset", reference="optimum avx512")
    add(study, 0.80, 0.9, "avx2 preset", reference="optimum avx2")
    apart = versus_preset(study, 0.01)
    assert "(optimum avx512, trial 2, 1.600x)" in apart and "1.250x as fast" in apart
    assert "measured apart" in apart
    true = {"best": 2.0, "fast but inaccurate": 2.4, "avx512 preset": 1.7, "avx2 preset": 0.9}
    rounds = Rounds(true, drift=(1.0, 0.9, 1.05), wobble=0.01)
    confirm_frontier(study, rounds)
    assert {"avx512 preset"} <= set(rounds.rounds[0]) and "avx2 preset" not in rounds.rounds[0]
    line = versus_preset(study, 0.01)
    ratio = float(line.split(" the best config is ")[1].split("x")[0])
    assert ratio == pytest.approx(2.0 / 1.7, rel=0.02)  # the rounds' ratio, drift cancelled
    assert "timed in the same confirmation rounds" in line and "measured apart" not in line
    with console.capture() as captured:
        print_frontier(study, 0.01)
    assert line in " ".join(captured.get().split())  # rich wraps it
    assert line in frontier_note(study, 0.01)
    assert line in render_html(study, 0.01).replace("&#x27;", "'")


def test_a_preset_that_is_the_best_config_is_named_as_such():
    from search.results import versus_preset

    study = new_study()
    add(study, 0.80, 1.6, "avx512 preset", reference="optimum avx512")
    add(study, 0.70, 2.0, "inaccurate")
    assert versus_preset(study, 0.01) == (
        "The best config is Optimum's preset itself (optimum avx512): none faster."
    )
    assert versus_preset(new_study(), 0.01) is None
