"""Run `qsearch` and SIGKILL it at a moment the test chooses: just before the study is told
the outcome of the first trial of a given kind, when every answer attribute of that trial
is already written and its state is not. That is the worst moment for a kill, and it is
the same moment on a fast CPU and a slow one.

    python tests/killpoint.py KIND RECORD_FILE -- qsearch arguments...

KIND is `measured`, `same-graph` or `pruned`. Before killing itself, the process appends
`<trial number> <kind>` to RECORD_FILE, so the test knows what it cut. When no trial of
that kind is told, the search runs to its end and RECORD_FILE stays unwritten.
"""

from __future__ import annotations

import os
import signal
import sys

import optuna
from optuna.trial import TrialState


def kind_being_told(trial: optuna.Trial, values, state) -> str | None:
    attrs = trial.user_attrs
    if attrs.get("same_graph_as") is not None:
        return "same-graph"
    if attrs.get("duplicate_of") is not None or attrs.get("reference"):
        return None
    if state == TrialState.PRUNED and attrs.get("prune_evidence") is not None:
        return "pruned"
    if values is not None and state in (None, TrialState.COMPLETE):
        return "measured"
    return None


def install(kind: str, record: str) -> None:
    tell = optuna.Study.tell

    def killing_tell(self, trial, values=None, state=None, skip_if_finished=False):
        if isinstance(trial, optuna.Trial) and kind_being_told(trial, values, state) == kind:
            with open(record, "a") as out:
                out.write(f"{trial.number} {kind}\n")
            os.kill(os.getpid(), signal.SIGKILL)
        return tell(self, trial, values, state, skip_if_finished)

    optuna.Study.tell = killing_tell


if __name__ == "__main__":
    kind, record, dashes, *args = sys.argv[1:]
    assert dashes == "--" and kind in ("measured", "same-graph", "pruned"), sys.argv
    install(kind, record)
    from search.cli import main

    sys.argv = ["qsearch", *args]
    main()
