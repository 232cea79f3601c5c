"""The CLI end to end on the tiny task: runs, resumes, reports, and refuses bad input."""

import optuna
import pytest

from search.results import pareto_rows
from search.runner import evaluated_count
from search.strategies.base import records
from search.trial_kind import EVALUATIONS
from tests.conftest import invoke

FAST = ["--timing-seconds", "0.2", "--no-presets", "--no-seeds"]


def load(workdir, name):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{workdir}/studies/{name}.db")


def test_help_explains_every_command():
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("run", "report", "prepare", "spaces", "show"):
        assert command in result.output
    for command in ("run", "report", "prepare", "show"):
        sub = invoke(command, "--help")
        assert sub.exit_code == 0 and "Usage" in sub.output
    assert "--beam" in invoke("run", "--help").output


def test_beam_run_writes_study_and_report_and_resumes(workdir, tiny_task_dir):
    def args(trials):
        return [
            "run",
            "--task-dir",
            tiny_task_dir,
            "--space",
            "operators",
            "--beam",
            "2",
            "--trials",
            trials,
            *FAST,
        ]

    first = invoke(*args(3))
    assert first.exit_code == 0, first.output
    name = f"{tiny_task_dir.name}-operators-beam2"
    study = load(workdir, name)
    assert evaluated_count(study) == 3
    assert study.metric_names == ["accuracy", "speedup"]
    report = (workdir / "reports" / f"{name}.html").read_text()
    for number in pareto_rows(study)["trial"]:
        assert f"<td>{number}</td>" in report
    assert "Pareto frontier" in first.output

    again = invoke(*args(3))  # same command: the budget is already spent, nothing is re-run
    assert again.exit_code == 0 and "budget of 3 trials reached" in again.output
    assert evaluated_count(load(workdir, name)) == 3

    # The tiny model's operators space holds 4 distinct quantized graphs (dynamic Transpose
    # quantizes nothing, so "+ Transpose" configs are copies of their twins, not trials).
    more = invoke(*args(4))
    assert more.exit_code == 0, more.output
    study = load(workdir, name)
    keys = [r.key for r in records(study) if r.kind in EVALUATIONS]
    assert evaluated_count(study) == 4 and len(keys) == len(set(keys))

    shown = invoke("show", "--study", name)
    assert shown.exit_code == 0 and "Pareto frontier" in shown.output
    rebuilt = invoke("report", "--study", name, "--out", workdir / "again.html")
    assert rebuilt.exit_code == 0 and (workdir / "again.html").exists()


def test_tpe_on_the_default_space_with_presets(workdir, tiny_task_dir):
    result = invoke(
        "run",
        "--task-dir",
        tiny_task_dir,
        "--sampler",
        "tpe",
        "--trials",
        "3",
        "--space",
        "default",
        "--timing-seconds",
        "0.2",
        "--study",
        "tpe-test",
    )
    assert result.exit_code == 0, result.output
    study = load(workdir, "tpe-test")
    refs = [t for t in study.trials if t.user_attrs.get("reference")]
    assert refs and all(t.user_attrs["reference"].startswith("optimum") for t in refs)
    assert evaluated_count(study) == 3


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["run", "--space", "nope"], "space file `"),
        (["run", "--sampler", "cmaes"], "--sampler must be one of tpe, random, grid, nsga2"),
        (["run", "--beam", "2", "--sampler", "tpe"], "either --beam"),
        (["run", "--trials", "0"], "--trials must be at least 1"),
        (["run", "--study", "../escape"], "--study must be"),
        (["run", "--task-dir", "missing-dir"], "must be a prepared task folder"),
        (["report", "--study", "never-ran"], "study 'never-ran' must exist"),
        (["show", "--study", "never-ran"], "study 'never-ran' must exist"),
        (["run", "--storage", "ftp://x"], "Optuna RDB URL"),
        (["run", "--prune-drop", "0.001"], "--prune-drop must be a fraction in [--max-drop, 1]"),
    ],
)
def test_bad_input_is_one_clear_message_and_exit_2(workdir, args, fragment):
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert fragment in result.output
    assert "Traceback" not in result.output
    assert not (workdir / "studies").exists() or not any((workdir / "studies").iterdir())


def test_storage_url_checked_before_the_task_is_loaded(workdir, tiny_task_dir):
    result = invoke(
        "run",
        "--task-dir",
        tiny_task_dir,
        "--storage",
        f"sqlite:///{workdir}/no/such/dir/x.db",
        *FAST,
    )
    assert result.exit_code == 2 and "must exist" in result.output


def test_invalid_space_file_exits_2_naming_file_and_key(workdir):
    bad = workdir / "bad.toml"
    bad.write_text("[quantization]\nmode = ['dynamic']\nper_channel = ['maybe']\n")
    result = invoke("spaces", "validate", bad)
    assert result.exit_code == 2
    assert "bad.toml" in result.output and "quantization.per_channel" in result.output
    assert "Traceback" not in result.output
    missing = invoke("spaces", "validate", workdir / "x.toml")
    assert missing.exit_code == 2 and "must exist" in missing.output


def test_spaces_list_shows_the_shipped_spaces():
    result = invoke("spaces", "list")
    assert result.exit_code == 0
    assert "default" in result.output and "operators" in result.output


def test_a_study_searched_with_another_space_is_refused(workdir, tiny_task_dir):
    base = [
        "run",
        "--task-dir",
        tiny_task_dir,
        "--beam",
        "2",
        "--trials",
        "1",
        "--study",
        "s",
        *FAST,
    ]
    assert invoke(*base, "--space", "operators").exit_code == 0
    other = invoke(*base, "--space", "dynamic")
    assert other.exit_code == 2 and "--study" in other.output


def test_frontier_is_confirmed_and_a_trial_can_be_re_measured(workdir, tiny_task_dir):
    import json

    from optuna_dashboard import get_note

    from search.note import frontier_note
    from search.results import confirmations, pooled_speeds

    result = invoke(
        "run",
        "--task-dir",
        tiny_task_dir,
        "--space",
        "operators",
        "--beam",
        "2",
        "--trials",
        "3",
        "--study",
        "conf",
        *FAST,
    )
    assert result.exit_code == 0, result.output
    study = load(workdir, "conf")
    checked = confirmations(study)
    front = pareto_rows(study)
    assert set(front["trial"]) <= set(checked)
    assert front["confirmed"].all() and (front["blocks"] > 1).all()  # trial + rounds pooled
    speeds = pooled_speeds(study)
    for number in front["trial"]:
        assert front.set_index("trial").loc[number, "speedup"] == speeds[number].speedup
    assert get_note(study) == frontier_note(study, 0.01)  # the dashboard's note: the same

    measured = invoke(
        "measure",
        "--study",
        "conf",
        "--trial",
        int(front["trial"][0]),
        "--seconds",
        "0.2",
        "--json",
    )
    assert measured.exit_code == 0, measured.output
    line = json.loads(measured.output.strip().splitlines()[-1])
    assert line["low"] <= line["ratio"] <= line["high"] and line["baseline_sps"] > 0
    number = int(front["trial"][0])
    again = pooled_speeds(load(workdir, "conf"))[number]
    assert again.blocks == speeds[number].blocks + 1  # the measure run is stored back
    bad = invoke("measure", "--study", "conf")
    assert bad.exit_code == 2 and "either --study NAME --trial N, or --config" in bad.output


def flat(result) -> str:
    """A command's output with rich's line wrapping undone."""
    return " ".join(result.output.split())


def test_reading_a_study_uses_its_own_max_drop_unless_given(workdir, tiny_task_dir):
    from search.export import choose_trial

    result = invoke(
        "run",
        "--task-dir",
        tiny_task_dir,
        "--space",
        "operators",
        "--beam",
        "2",
        "--trials",
        "2",
        "--max-drop",
        "0.05",
        "--study",
        "lenient",
        "--no-confirm",
        "--no-report",
        *FAST,
    )
    assert result.exit_code == 0, result.output
    assert "fastest within 5 point(s) of fp32 (--max-drop 0.05)" in flat(result)
    study = load(workdir, "lenient")
    assert study.user_attrs["settings"]["max_drop"] == 0.05
    # fp32 3 points above the best trial: every trial is within the study's 0.05, none
    # within the default 0.01, so the bar each command used shows in what it answers.
    best_accuracy = max(t.values[0] for t in study.trials if t.values)
    study.set_user_attr("fp32_accuracy", best_accuracy + 0.03)
    expected = choose_trial(study, None, True, 0.05).number

    shown = invoke("show", "--study", "lenient")
    assert shown.exit_code == 0, shown.output
    assert f"fastest within 5 point(s) of fp32 (--max-drop 0.05): trial {expected}," in flat(shown)
    strict = invoke("show", "--study", "lenient", "--max-drop", "0.01")
    assert strict.exit_code == 0 and "no config within 1 point(s) of fp32" in flat(strict)

    assert invoke("report", "--study", "lenient", "--out", workdir / "own.html").exit_code == 0
    assert "best speedup within 5 point(s) of fp32" in (workdir / "own.html").read_text()
    given = invoke(
        "report", "--study", "lenient", "--max-drop", "0.01", "--out", workdir / "x.html"
    )
    assert given.exit_code == 0
    assert "best speedup within 1 point(s) of fp32" in (workdir / "x.html").read_text()

    exported = invoke("export", "--study", "lenient", "--best")
    assert exported.exit_code == 0, exported.output
    assert f"Exported trial {expected} " in exported.output
    refused = invoke("export", "--study", "lenient", "--best", "--max-drop", "0.01")
    assert refused.exit_code == 2 and "within --max-drop 0.01 of fp32" in refused.output
    bad = invoke("show", "--study", "lenient", "--max-drop", "1.5")
    assert bad.exit_code == 2 and "--max-drop must be a fraction in [0, 1]" in bad.output
