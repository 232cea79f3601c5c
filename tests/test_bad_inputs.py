"""Every bad input of scripts/bad_inputs.py, on the tiny model: exit code 2, one message naming
what is wrong, no traceback, nothing written."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from search.cli import app

_spec = importlib.util.spec_from_file_location(
    "bad_inputs", Path(__file__).parents[1] / "scripts" / "bad_inputs.py"
)
bad_inputs = sys.modules["bad_inputs"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bad_inputs)


@pytest.mark.parametrize("case", bad_inputs.CASES, ids=lambda c: c.what)
def test_bad_input_is_answered_with_one_message_and_exit_2(
    case, tmp_path, monkeypatch, tiny_task_dir
):
    for name, text in bad_inputs.FILES.items():
        (tmp_path / name).write_text(text)
    monkeypatch.chdir(tmp_path)
    args = [a.replace("{task}", str(tiny_task_dir)) for a in case.args]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: "), result.output
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    for folder in ("studies", "reports", "exports"):
        assert not any((tmp_path / folder).glob("*")), f"{folder}/ written"
