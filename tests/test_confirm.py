"""Confirmation re-times until the frontier, read with the confirmations, is all confirmed."""

from types import SimpleNamespace

import optuna
from optuna.distributions import CategoricalDistribution

from search.confirm import confirm_frontier
from search.results import confirmations, pareto_rows


class Retimer:
    """Re-measures: the lucky config (key 'lucky') turns out slower than first seen."""

    def __init__(self):
        self.calls = []
        self.seconds = []

    def retime(self, config, seconds=None):
        self.calls.append(config.operators)
        self.seconds.append(seconds)
        ratio = 1.2 if config.operators == ("Gather", "MatMul") else self.first[config.operators]
        return SimpleNamespace(
            ratio=ratio, low=ratio * 0.97, high=ratio * 1.03, loaded=False, pairs=12
        )


def add(study, accuracy, speedup, operators):
    study.add_trial(
        optuna.trial.create_trial(
            values=[accuracy, speedup],
            params={"mode": "dynamic"},
            distributions={"mode": CategoricalDistribution(["dynamic"])},
            user_attrs={
                "config": {"mode": "dynamic", "operators": list(operators)},
                "speedup_low": speedup * 0.97,
                "speedup_high": speedup * 1.03,
                "description": "+".join(operators),
            },
        )
    )


def test_a_lucky_config_is_demoted_and_the_new_frontier_is_confirmed_too():
    study = optuna.create_study(directions=["maximize", "maximize"])
    study.set_user_attr("fp32_accuracy", 0.8)
    add(study, 0.80, 1.60, ("Gather", "MatMul"))  # lucky: really 1.2
    add(study, 0.80, 1.45, ("MatMul",))  # dominated at first, frontier once 0 is demoted
    add(study, 0.70, 1.30, ("Gather",))
    retimer = Retimer()
    retimer.first = {("MatMul",): 1.45, ("Gather",): 1.30}
    assert set(pareto_rows(study)["trial"]) == {0}
    done = confirm_frontier(study, retimer, seconds=36.0)
    assert done[0]["speedup"] == 1.2
    front = pareto_rows(study)
    assert 1 in set(front["trial"]) and front["confirmed"].all()
    assert set(confirmations(study)) >= set(front["trial"])
    assert len(retimer.calls) == len(set(retimer.calls))  # nothing re-timed twice
    assert set(retimer.seconds) == {36.0}  # the longer budget of confirmations
    assert all(c["seconds"] == 36.0 for c in done.values())
