"""The study a search writes opens in optuna-dashboard (its WSGI app, no server needed)."""

import io
import json
from wsgiref.util import setup_testing_defaults

import optuna
import pytest

from tests.fakes import FakeEvaluator

optuna_dashboard = pytest.importorskip("optuna_dashboard")


def call(app, path):
    environ = {"PATH_INFO": path, "REQUEST_METHOD": "GET", "wsgi.input": io.BytesIO()}
    setup_testing_defaults(environ)
    status = {}

    def start_response(code, headers, exc_info=None):
        status["code"] = code

    body = b"".join(app(environ, start_response))
    return status["code"], body


def test_dashboard_lists_the_study_and_its_trials(tmp_path):
    from search.runner import run_search
    from search.space import load_space
    from search.strategies import BeamSearch
    from search.study import open_study

    url = f"sqlite:///{tmp_path}/s.db"
    space = load_space("operators").resolve(["MatMul", "Gather", "Add"])
    study = open_study("dash", url, space, {"name": "fake"}, None, "beam2")
    study.set_user_attr("fp32_accuracy", 0.8)
    run_search(study, space, BeamSearch(width=2), FakeEvaluator(), trials=3)

    app = optuna_dashboard.wsgi(optuna.storages.RDBStorage(url))
    code, body = call(app, "/api/studies")
    assert code.startswith("200")
    summaries = json.loads(body)["study_summaries"]
    assert [s["study_name"] for s in summaries] == ["dash"]
    code, body = call(app, f"/api/studies/{summaries[0]['study_id']}")
    detail = json.loads(body)
    assert code.startswith("200") and len(detail["trials"]) == 3
    assert detail["objective_names"] == ["accuracy", "speedup"]


def test_the_dashboard_shows_the_pooled_frontier_as_the_study_note(tmp_path):
    from search.note import frontier_note, save_frontier_note
    from search.pooled import add_blocks

    url = f"sqlite:///{tmp_path}/n.db"
    study = optuna.create_study(directions=["maximize", "maximize"], storage=url)
    study.set_user_attr("fp32_accuracy", 0.8)
    for speed in (2.0, 1.8):
        attrs = {"config": {"mode": "dynamic"}, "description": f"at {speed}"}
        study.add_trial(optuna.trial.create_trial(values=[0.8, speed], user_attrs=attrs))
    add_blocks(study, 0, [{"source": "measure", "speedup": 1.5, "low": 1.4, "high": 1.6}] * 4)
    assert save_frontier_note(study, 0.01)
    app = optuna_dashboard.wsgi(optuna.storages.RDBStorage(url))
    code, body = call(app, f"/api/studies/{study._study_id}")
    note = json.loads(body)["note"]["body"]
    assert note == frontier_note(study, 0.01) and "trial 1, 1.800x" in note
