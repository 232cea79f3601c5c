"""The side-by-side benchmark's code path, scaled down: two real searches of the tiny task,
then their best configs re-timed together in confirmation rounds, the studies left as they
were."""

from __future__ import annotations

import json

import pytest

from search.results import trial_rows
from search.study import load_study
from tests.conftest import invoke
from tests.test_benchmarks import load

side = load("side_by_side")


@pytest.fixture(scope="module")
def two_studies(tiny_task_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("side")
    storage = f"sqlite:///{root}/both.db"
    for name, space in (("a", "dynamic"), ("b", "operators")):
        result = invoke(
            "run", "--task-dir", tiny_task_dir, "--space", space, "--trials", 3,
            "--timing-seconds", 0.2, "--no-presets", "--no-confirm", "--study", name,
            "--storage", storage, "--no-report",  # nothing written into the checkout
        )  # fmt: skip
        assert result.exit_code == 0, result.output
    return storage


def test_each_studys_fastest_within_the_bar_is_timed_beside_the_others(two_studies, capsys):
    before = {n: len(load_study(n, two_studies).trials) for n in "ab"}
    argv = ["--study", "a", "--study", "b", "--storage", two_studies, "--max-drop", "1"]
    assert side.main([*argv, "--top", "2", "--rounds", "2", "--seconds", "0.3"]) == 0
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    rows = result["rows"]
    for name in "ab":
        study = load_study(name, two_studies)
        assert len(study.trials) == before[name]  # only read
        expected = trial_rows(study).sort_values("speedup", ascending=False)["trial"][:2]
        assert [r["trial"] for r in rows if r["study"] == name] == list(expected)
    assert [r["study"] for r in rows] == sorted(r["study"] for r in rows)  # the first study first
    for r in rows:
        s = r["speedup"]
        assert r["error"] is None and s["blocks"] == 2
        assert s["low"] <= s["speedup"] <= s["high"]
    ratio, low, high = rows[0]["vs_first"]
    assert ratio == pytest.approx(1.0) and low == pytest.approx(1.0)  # the first against itself
    for r in rows[1:]:  # the same-round ratio lies between the pooled speedups' bounds
        ratio, low, high = r["vs_first"]
        assert low <= ratio <= high
        assert r["speedup"]["low"] / rows[0]["speedup"]["high"] <= ratio
        assert ratio <= r["speedup"]["high"] / rows[0]["speedup"]["low"]


def test_nothing_to_compare_is_said_plainly(two_studies, capsys):
    argv = ["--study", "a", "--storage", two_studies, "--mode", "static", "--rounds", "1"]
    assert side.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the studies must hold a measured static config")
    assert "['a']" in err


def test_a_study_splits_by_the_strategy_that_proposed_each_trial(two_studies, capsys):
    study = load_study("a", two_studies)
    proposer = {t.number: t.user_attrs.get("strategy") for t in study.trials}
    one = proposer[0]
    argv = ["--study", f"a:{one}", "--study", f"a:-{one}", "--storage", two_studies]
    assert (
        side.main([*argv, "--max-drop", "1", "--top", "3", "--rounds", "1", "--seconds", "0.2"])
        == 0
    )
    rows = json.loads(capsys.readouterr().out.splitlines()[-1])["rows"]
    mine = [r["trial"] for r in rows if r["study"] == f"a:{one}"]
    others = [r["trial"] for r in rows if r["study"] == f"a:-{one}"]
    assert mine and all(proposer[n] == one for n in mine)
    assert all(proposer[n] != one for n in others)
    measured = set(trial_rows(study)["trial"])
    assert set(mine) == {n for n in measured if proposer[n] == one}  # 3 trials: all kept
    assert set(others) == {n for n in measured if proposer[n] != one}


@pytest.mark.parametrize("spec", ["a:", "a:-"])
def test_a_strategy_filter_without_a_strategy_is_said_plainly(two_studies, capsys, spec):
    assert side.main(["--study", spec, "--storage", two_studies]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --study {spec!r} names no strategy") and "a:fallback" in err
