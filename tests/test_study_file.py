"""Study files and `qsearch run`'s options are both read from `RunSettings`: every field a
study file may hold loads with a value of its type, a wrong type is refused naming the key,
`--help` shows the dataclass's defaults, and the shipped study file is `make run`'s search."""

import dataclasses
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from search import cli_run
from search.cli import app
from search.errors import QsearchError
from search.settings import RunSettings
from search.study_file import load_study_file

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()

# Every key a study file may hold, each with a valid value of its field's type.
EVERY_KEY = """\
name = "everything"

[model]
path = "my-model"
tokenizer = "my-tokenizer"
task_dir = "my-task"
output = "sentence_embedding"
pooling = "cls"

[data]
path = "reviews.csv"
text_column = "review"
text_pair_column = "second"
label_column = "sentiment"
split = "test"
eval_size = 500
calibration_size = 64
metric = "macro_f1"

[search]
space = "operators"
beam = 3
sampler = "tpe"
fallback = false
trials = 10
timeout = 600
max_drop = 0.02
prune_drop = 0.1
seed = 7
presets = false
seeds = false
defer_moves = false
settle_ties = false
confirm = false
storage = "sqlite:///elsewhere.db"
isolate = false
trial_time_limit = 120.5

[measure]
timing_seconds = 6
timing_target = 0.02
confirm_seconds = 18.0
objective = "latency"
threads = [2, 1]
batch_size = 4
max_length = 256
padding = "max_length"
"""
CLI_ONLY = {"report", "continue_with_new_space"}


def write(tmp_path, text, name="study.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_study_file_with_every_key_loads_with_the_fields_types(tmp_path):
    values = load_study_file(write(tmp_path, EVERY_KEY))
    fields = {f.name for f in dataclasses.fields(RunSettings)}
    assert set(values) == fields - CLI_ONLY  # the file above holds every study-file field
    assert values["timing_target"] == 0.02 and values["trial_time_limit"] == 120.5
    # a float field takes a TOML int, as a float
    assert values["timing_seconds"] == 6.0 and isinstance(values["timing_seconds"], float)
    assert isinstance(values["timeout"], float) and values["beam"] == 3
    assert values["presets"] is False and values["study"] == "everything"
    for key in ("model", "tokenizer", "task_dir", "data"):  # relative to the file's folder
        assert isinstance(values[key], Path) and values[key].parent == tmp_path
    # every value is one RunSettings takes (--task-dir and --model exclude each other)
    values.pop("task_dir")
    settings = RunSettings(**{**values, "sampler": None})
    assert settings.timing_target == 0.02 and settings.objective == "latency"
    assert (settings.batch_size, settings.max_length, settings.padding) == (4, 256, "max_length")
    assert (settings.output, settings.pooling) == ("sentence_embedding", "cls")
    assert settings.threads == (2, 1)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[measure]\ntiming_target = 'tight'\n", "`measure.timing_target` must be a float"),
        ("[measure]\ntiming_seconds = true\n", "`measure.timing_seconds` must be a float"),
        ("[search]\nbeam = 'four'\n", "`search.beam` must be a int, but got 'four'"),
        ("[search]\nbeam = 2.0\n", "`search.beam` must be a int, but got 2.0"),
        ("[search]\nbeam = true\n", "`search.beam` must be a int, but got True"),
        ("[search]\npresets = 1\n", "`search.presets` must be a bool, but got 1"),
        ("[search]\nspace = 4\n", "`search.space` must be a str, but got 4"),
        ("[model]\npath = 3\n", "`model.path` must be a str (a path), but got 3"),
        ("name = 3\n", "`name` must be a str, but got 3"),
        ("[search]\nreport = false\n", "`search.report` is not a known key"),
        ("[measure]\nbeam = 4\n", "`measure.beam` is not a known key; allowed in [measure]"),
        ("[run]\nbeam = 4\n", "`run` is not a known key; allowed: name, ["),
    ],
)
def test_a_wrong_key_or_type_is_refused_naming_the_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(QsearchError) as caught:
        load_study_file(path)
    assert str(caught.value).startswith(f"{path}: ") and message in str(caught.value)


def test_a_wrong_type_exits_2_with_one_message(tmp_path):
    result = runner.invoke(app, ["run", str(write(tmp_path, "[measure]\ntiming_target = 'x'\n"))])
    assert result.exit_code == 2
    assert "`measure.timing_target` must be a float, but got 'x'" in result.output
    assert "Traceback" not in result.output


def settings_of(monkeypatch, *args) -> RunSettings:
    """The RunSettings `qsearch run ARGS` would search with (the real parsing, not run)."""
    seen = []
    monkeypatch.setattr(cli_run, "_run", seen.append)
    result = runner.invoke(app, ["run", *map(str, args)])
    assert result.exit_code == 0, result.output
    return seen[0]


def test_the_shipped_study_file_is_make_runs_search(monkeypatch):
    from search.space import load_space
    from search.strategies import make_strategy
    from search.tasks.default import TASK_NAME

    makefile = (ROOT / "Makefile").read_text()
    assert "$(BIN)/qsearch run --beam 4\n" in makefile
    from_file = settings_of(monkeypatch, ROOT / "studies" / "default.toml")
    from_options = settings_of(monkeypatch, "--beam", "4")
    assert dataclasses.replace(from_file, study=None) == from_options
    # the file names the study `--beam 4` is given by default: the same study, resumed
    space, strategy = load_space(from_options.space), make_strategy(4, None)
    assert from_file.study == f"{TASK_NAME}-{space.name}-{strategy.name}"


def test_options_override_the_study_file(monkeypatch, tmp_path):
    path = write(tmp_path, "[search]\nbeam = 2\nmax_drop = 0.03\n[measure]\ntiming_seconds = 3\n")
    settings = settings_of(monkeypatch, path, "--timing-seconds", "5", "--no-presets")
    assert (settings.beam, settings.max_drop) == (2, 0.03)
    assert (settings.timing_seconds, settings.presets) == (5.0, False)


def test_run_help_shows_the_dataclass_defaults():
    command = typer.main.get_command(app).commands["run"]
    options = {p.name: p for p in command.params}
    fields = {f.name: f for f in dataclasses.fields(RunSettings)}
    assert set(options) - {"study_file", "study_name"} == set(fields) - {"study"}
    shown = 0
    for name, f in fields.items():
        if name == "study" or f.default is None:
            continue
        option = options[name]
        if isinstance(f.default, bool):
            if f.metadata:  # a study-file field: unset unless given, the default shown
                assert option.default is None and option.show_default == (
                    name if f.default else f"no-{name}"
                )
            else:
                assert option.default is f.default
            continue
        assert option.default is None  # unset unless given, so a study file's value stands
        if isinstance(f.default, tuple):  # thread counts: as the option takes them, "1,2"
            expected = ",".join(map(str, f.default))
        else:
            expected = f"{f.default:g}" if type(f.default) is float else str(f.default)
        assert option.show_default == expected
        shown += 1
    assert shown >= 10 and options["timing_seconds"].show_default == "12"
