"""benchmarks/move_order.py: a beam study replayed from its own measurements, in walk order
and with the moves that paid first."""

import json

import optuna

from benchmarks.move_order import main, replay
from search.runner import run_search
from search.space import SPACES_DIR, load_space
from search.strategies import make_strategy
from search.strategies.base import records
from tests.fakes import FP32
from tests.test_beam import MODEL_OPS, Uint8Slow


def beam_study(storage: str) -> tuple[optuna.Study, object]:
    """A beam run of the fake landscape (uint8 weights slower), recorded as a run records
    its space."""
    space = load_space("dynamic").resolve(MODEL_OPS)
    study = optuna.create_study(
        study_name="beam", storage=storage, directions=["maximize", "maximize"]
    )
    study.set_user_attr("fp32_accuracy", FP32)
    study.set_user_attr("space_text", (SPACES_DIR / "dynamic.toml").read_text())
    run_search(study, space, make_strategy(4, None), Uint8Slow(), trials=200)
    return study, space


def test_both_replays_run_the_studys_configs_and_only_the_order_differs(tmp_path, capsys):
    storage = f"sqlite:///{tmp_path / 'beam.db'}"
    study, space = beam_study(storage)
    measured = {r.key for r in records(study) if r.values is not None}
    walked = replay(study, space, 4, False, 0.01)
    ordered = replay(study, space, 4, True, 0.01)
    assert walked["measured_trials"] == ordered["measured_trials"] == len(measured)
    assert set(walked["order"]) == set(ordered["order"]) == measured
    assert walked["order"] != ordered["order"]
    for r in (walked, ordered):
        assert 1 <= r["converged"] <= r["measured_trials"]
        assert r["held_frontier"] is not None and r["held_final_best"] is not None
    # the command: the same replays from the stored study, a table and a JSON line
    assert main(["--study", "beam", "--storage", storage, "--operators", ",".join(MODEL_OPS)]) == 0
    out = capsys.readouterr().out
    line = json.loads(out.strip().splitlines()[-1])
    assert line["replays"]["by gain"]["converged"] == ordered["converged"]
    assert line["replays"]["walk order"]["measured_trials"] == len(measured)


def test_a_beam_wider_than_the_run_asks_for_configs_never_measured(tmp_path, capsys):
    storage = f"sqlite:///{tmp_path / 'beam.db'}"
    beam_study(storage)
    args = ["--study", "beam", "--storage", storage, "--operators", ",".join(MODEL_OPS)]
    assert main([*args, "--width", "8"]) == 2
    assert "never measured" in capsys.readouterr().err
