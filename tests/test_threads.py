"""Several thread counts in one run: a study and a frontier per count, one page for all; and a
study resumed at another thread count or serving shape is refused, not mixed."""

from __future__ import annotations

import optuna
import pytest

from search.errors import QsearchError
from search.results import pareto_rows
from search.runner import evaluated_count
from search.settings import RunSettings, parse_threads
from search.strategies.seeded import SEED
from search.study_file import load_study_file
from search.trial_kind import is_measured
from tests.conftest import invoke

FAST = ["--timing-seconds", "0.2", "--no-presets", "--no-seeds", "--no-confirm"]


def _run(tiny_task_dir, *extra):
    return invoke(
        "run",
        "--task-dir",
        tiny_task_dir,
        "--space",
        "operators",
        "--beam",
        "2",
        *FAST,
        *extra,
    )


def test_two_thread_counts_give_two_frontiers_and_one_page(workdir, tiny_task_dir):
    result = _run(tiny_task_dir, "--threads", "1,2", "--trials", "3", "--study", "tc")
    assert result.exit_code == 0, result.output
    url = f"sqlite:///{workdir}/studies/tc.db"  # one storage holds every count's study
    names = sorted(s.study_name for s in optuna.get_all_study_summaries(url))
    assert names == ["tc-t1", "tc-t2"]
    for threads in (1, 2):
        study = optuna.load_study(study_name=f"tc-t{threads}", storage=url)
        assert evaluated_count(study) == 3
        measured = [t for t in study.trials if is_measured(t)]
        # every speedup of the count's study was timed at that count, against fp32 at it
        assert measured and {t.user_attrs["worker"]["threads"] for t in measured} == {threads}
        assert {t.user_attrs["timing_settings"]["threads"] for t in measured} == {threads}
        assert not pareto_rows(study).empty
        assert study.user_attrs["settings"]["threads"] == [threads]
        assert study.user_attrs["thread_group"] == {"base": "tc", "studies": ["tc-t1", "tc-t2"]}
    second = optuna.load_study(study_name="tc-t2", storage=url)
    carried = [t.user_attrs.get(SEED, "") for t in second.trials]
    assert any(label.startswith("frontier at 1 thread(s), trial ") for label in carried)

    page = (workdir / "reports" / "tc.html").read_text()
    for text in ("tc-t1", "tc-t2", "1 thread(s): frontier", "2 thread(s): frontier"):
        assert text in page
    assert (workdir / "reports" / "tc-t1.html").exists()
    assert (workdir / "reports" / "tc-t2.html").exists()
    assert "Best config per thread count" in result.output

    # every command finds a count's study in its run's storage, and the run's name
    # rebuilds the page of all counts
    shown = invoke("show", "--study", "tc-t2")
    assert shown.exit_code == 0 and "Pareto frontier of tc-t2" in shown.output
    rebuilt = invoke("report", "--study", "tc", "--out", workdir / "again.html")
    assert rebuilt.exit_code == 0, rebuilt.output
    assert "2 thread(s): frontier" in (workdir / "again.html").read_text()
    missing = invoke("report", "--study", "tc-t3")
    assert missing.exit_code == 2 and "must exist" in missing.output

    again = _run(tiny_task_dir, "--threads", "1,2", "--trials", "3", "--study", "tc")
    assert again.exit_code == 0, again.output
    assert again.output.count("budget of 3 trials reached") == 2


def test_resuming_at_another_thread_count_or_shape_is_refused(workdir, tiny_task_dir):
    base = ["--trials", "1", "--study", "s", "--max-length", "32"]
    assert _run(tiny_task_dir, *base).exit_code == 0
    for changed, fragment in (
        (["--threads", "2"], "--threads 1 (now 2)"),
        (["--max-length", "16"], "--max-length 32 (now 16)"),
        (["--batch-size", "8"], "--batch-size"),
        (["--padding", "max_length"], "--padding 'longest'"),
    ):
        other = _run(tiny_task_dir, *base, *changed)
        assert other.exit_code == 2, other.output
        assert fragment in other.output and "use another --study name" in other.output
        assert "Traceback" not in other.output
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{workdir}/studies/s.db")
    assert evaluated_count(study) == 1  # nothing of the refused runs was written


@pytest.mark.parametrize("value", ["0", "1,1", "1,x", "", "-2"])
def test_bad_thread_counts_are_one_message(workdir, tiny_task_dir, value):
    result = _run(tiny_task_dir, "--threads", value, "--trials", "1")
    assert result.exit_code == 2, result.output
    assert "--threads must be one thread count or several" in result.output
    assert not (workdir / "studies").exists() or not list((workdir / "studies").glob("*.db"))


def test_thread_counts_from_every_source():
    assert parse_threads("1,2") == (1, 2)
    assert parse_threads(" 4 , 1") == (4, 1)
    assert parse_threads(2) == (2,)
    assert parse_threads([1, 2]) == (1, 2)
    for bad in ("1,,2", [], [True], [1.5], "two"):
        with pytest.raises(QsearchError, match="--threads"):
            parse_threads(bad)
    settings = RunSettings(threads="1,2", study="x")
    split = settings.per_thread_count()
    assert [s.threads for s in split] == [(1,), (2,)]
    assert [s.thread_count for s in split] == [1, 2]
    with pytest.raises(QsearchError, match="one thread count"):
        _ = settings.thread_count
    single = RunSettings(threads=1)
    assert single.per_thread_count() == [single] and single.thread_count == 1
    # stored settings (JSON) come back as lists: the same settings
    assert RunSettings(**{**split[1].to_dict(), "task_dir": None}).threads == (2,)
    assert [s.study for s in split] == ["x", "x"]  # the study name gets -t<n> when opened


def test_study_files_take_one_count_or_a_list(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text("[measure]\nthreads = [1, 2]\n")
    assert RunSettings(**load_study_file(path)).threads == (1, 2)
    path.write_text("[measure]\nthreads = 2\n")
    assert RunSettings(**load_study_file(path)).threads == (2,)
    for bad in ('"2"', "[1, true]", "[]", "1.5"):
        path.write_text(f"[measure]\nthreads = {bad}\n")
        with pytest.raises(QsearchError, match="measure.threads` must be an int or a list"):
            load_study_file(path)
