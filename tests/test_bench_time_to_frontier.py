"""The time-to-frontier benchmark's code path, scaled down: a real `qsearch run` on the tiny
task into its own study, read back into a hypervolume curve and the time it held its best."""

from __future__ import annotations

import json

from tests.test_benchmarks import load

ttf = load("time_to_frontier")


def test_a_run_is_timed_from_its_own_study_and_resumes(
    capsys, tiny_task_dir, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    task = f"--task-dir {tiny_task_dir} --space operators --trials 3 --timing-seconds 0.2"
    runs = "beam-before,beam"
    argv = ["--runs", runs, "--storage-dir", str(tmp_path / "t"), "--task-args", task]
    argv[-1] += " --no-presets --no-confirm"
    assert ttf.main(argv) == 0
    line = [x for x in capsys.readouterr().out.splitlines() if x.startswith('{"benchmark"')][-1]
    before, run = json.loads(line)["runs"]
    assert before["run"] == "beam-before" and "held_before_frontier" in run
    # the run before holds its own frontier exactly when it holds it as the reference
    assert before["held_before_frontier"] == before["held_frontier"]
    if run["held_before_frontier"] is not None:
        assert run["held_before_frontier"]["measured_trials"] <= run["measured_trials"]
    assert run["run"] == "beam" and run["study"] == "ttf-default-beam"
    assert run["measured_trials"] >= 1 and len(run["curve"]) == run["measured_trials"]
    seconds = [p["seconds"] for p in run["curve"]]
    volumes = [p["hypervolume"] for p in run["curve"]]
    assert seconds == sorted(seconds) and volumes == sorted(volumes)  # it only grows
    if run["final_best"] is not None:  # the trial that first held it exists and is in the curve
        assert run["held_final_best"]["trial"] in [p["trial"] for p in run["curve"]]
    assert run["converged"]["measured_trials"] <= run["measured_trials"]
    frontier = run["held_frontier"]  # the whole final frontier: no sooner than its best
    if frontier is not None:
        assert frontier["measured_trials"] <= run["measured_trials"] and frontier["configs"] >= 1
        if run["held_final_best"] is not None:
            trials = [p["trial"] for p in run["curve"]]
            held_best = trials.index(run["held_final_best"]["trial"]) + 1
            assert held_best <= frontier["measured_trials"]

    assert ttf.main(argv) == 0  # the same command again: the study is resumed, not re-run
    again = json.loads(capsys.readouterr().out.splitlines()[-1])["runs"][1]
    assert again["measured_trials"] == run["measured_trials"]
