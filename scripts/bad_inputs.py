"""Every kind of bad input `qsearch` can be given, run for real, as a table of what it prints.

Each case runs the installed CLI in a fresh folder and must end with exit code 2, one message
and no traceback, and leave nothing behind (no study, no report). `tests/test_bad_inputs.py`
runs all of them on the tiny test model; run this script to see the messages themselves:

    python scripts/bad_inputs.py [--task-dir FOLDER]   # default: the embedded default task
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

FILES = {
    "syntax.toml": "[quantization\nmode = ['dynamic']\n",
    "unknown_key.toml": "[quantization]\nmode = ['dynamic']\nspeed = ['max']\n",
    "bad_value.toml": "[quantization]\nmode = ['dynamic']\nper_channel = ['maybe']\n",
    "typo_operator.toml": "[quantization]\nmode = ['dynamic']\noperators = ['MatMull']\n",
    "impossible.toml": "[quantization]\nmode = ['dynamic']\n[calibration]\nmethod = ['entropy']\n",
    "no_text.csv": "review,label\ngreat film,1\nawful,0\n",
    "data.xlsx": "not a spreadsheet",
    "study_typo.toml": "[search]\nbeam = 2\nbudget = 10\n",
    "sentences.csv": "text\na plain sentence\nanother plain sentence\na third one\n",
    "empty.toml": "",
}


@dataclass(frozen=True)
class Case:
    what: str
    args: tuple[str, ...]
    needs_task: bool = False


CASES = [
    Case("space file with a TOML syntax error", ("run", "--space", "syntax.toml")),
    Case("space file with an unknown key", ("run", "--space", "unknown_key.toml")),
    Case("space value not allowed", ("run", "--space", "bad_value.toml")),
    Case("space file that does not exist", ("run", "--space", "nope.toml")),
    Case("impossible combination in a space", ("run", "--space", "impossible.toml")),
    Case("empty space file", ("run", "--space", "empty.toml")),
    Case(
        "operator the model does not have",
        ("run", "--space", "typo_operator.toml", "--task-dir", "{task}"),
        needs_task=True,
    ),
    Case("unknown sampler", ("run", "--sampler", "cmaes")),
    Case("two strategies at once", ("run", "--beam", "2", "--sampler", "tpe")),
    Case("budget of zero", ("run", "--trials", "0")),
    Case("timing target out of range", ("run", "--timing-target", "2")),
    Case("unknown objective", ("run", "--objective", "fast")),
    Case("unknown metric", ("run", "--metric", "bleu")),
    Case("study name that escapes its folder", ("run", "--study", "../escape")),
    Case("storage URL of another kind", ("run", "--storage", "ftp://host/x")),
    Case("SQLite storage in a missing folder", ("run", "--storage", "sqlite:///no/dir/x.db")),
    Case(
        "PostgreSQL storage nobody listens on",
        ("run", "--task-dir", "{task}", "--storage", "postgresql://u@127.0.0.1:9/db"),
        needs_task=True,
    ),
    Case("missing task folder", ("run", "--task-dir", "missing-dir")),
    Case("--model without --data", ("run", "--model", "{task}/model.onnx")),
    Case("model file that does not exist", ("run", "--model", "nope.onnx", "--data", "x.csv")),
    Case(
        "data without the named text column",
        ("run", "--model", "{task}/model.onnx", "--data", "no_text.csv", "--text-column", "text"),
        needs_task=True,
    ),
    Case(
        "data in a format qsearch cannot read",
        ("run", "--model", "{task}/model.onnx", "--data", "data.xlsx"),
        needs_task=True,
    ),
    Case(
        "--output the model does not have",
        ("run", "--model", "{task}/model.onnx", "--data", "sentences.csv", "--output", "nope"),
        needs_task=True,
    ),
    Case(
        "--max-length past the model's positions",
        (
            "run",
            "--model",
            "{task}/model.onnx",
            "--data",
            "sentences.csv",
            "--max-length",
            "600",
            "--padding",
            "max_length",
        ),
        needs_task=True,
    ),
    Case("study file with an unknown key", ("run", "study_typo.toml")),
    Case("report of a study that never ran", ("report", "--study", "never-ran")),
    Case("export of a study that never ran", ("export", "--study", "never-ran", "--best")),
    Case("spaces validate on a broken file", ("spaces", "validate", "bad_value.toml")),
    Case("spaces validate on an empty file", ("spaces", "validate", "empty.toml")),
]


@dataclass(frozen=True)
class Outcome:
    case: Case
    exit_code: int
    output: str
    left_behind: list[str]

    @property
    def message(self) -> str:
        lines = [line.strip() for line in self.output.strip().splitlines() if line.strip()]
        return " ".join(lines)


def run_case(case: Case, task_dir: Path, workdir: Path) -> Outcome:
    workdir.mkdir(parents=True, exist_ok=True)
    for name, text in FILES.items():
        (workdir / name).write_text(text)
    args = [a.replace("{task}", str(task_dir)) for a in case.args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-m", "search.cli", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    left = [
        str(p.relative_to(workdir))
        for folder in ("studies", "reports", "exports")
        for p in (workdir / folder).glob("*")
    ]
    return Outcome(case, done.returncode, done.stdout + done.stderr, left)


def markdown(outcomes: list[Outcome]) -> str:
    rows = ["| bad input | command | exit | what qsearch printed |", "|---|---|---|---|"]
    for o in outcomes:
        command = "qsearch " + " ".join(o.case.args).replace("{task}", "TASK")
        message = o.message.replace("|", "\\|")
        rows.append(f"| {o.case.what} | `{command}` | {o.exit_code} | {message} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task-dir", type=Path, default=None, help="default: the default task")
    options = parser.parse_args()
    task_dir = options.task_dir
    if task_dir is None:
        from search.tasks.default import default_task_dir

        task_dir = default_task_dir()
    root = Path(tempfile.mkdtemp(prefix="bad-inputs-"))
    try:
        outcomes = [run_case(c, task_dir, root / str(i)) for i, c in enumerate(CASES)]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(markdown(outcomes))
    wrong = [o for o in outcomes if o.exit_code != 2 or "Traceback" in o.output or o.left_behind]
    for o in wrong:
        print(f"NOT ANSWERED PROPERLY: {o.case.what}: exit {o.exit_code}, left {o.left_behind}")
    sys.exit(1 if wrong else 0)


if __name__ == "__main__":
    main()
