"""Scoring that stops once the search's question is answered (within or beyond --max-drop),
and the completion of such configs' accuracy where the frontier may hold them, on the tiny
BERT for real."""

import numpy as np
import optuna
import pytest

from search.completion import completed, to_complete
from search.config import QuantConfig
from search.confirm import complete_frontier
from search.early import PruneSettings, decided, drop_range
from search.errors import QsearchError
from search.isolation import IsolatedEvaluator
from search.measure import TimingSettings
from search.objective import Evaluator
from search.results import best_row, pareto_rows, trial_rows

FAST = TimingSettings(seconds=0.3, warmup_runs=1, block_pairs=2, min_blocks=2)
MATMUL = QuantConfig(operators=("MatMul",))


@pytest.fixture(scope="module")
def agreement_task(tiny_task_dir):
    from search.tasks.default import load_task_dir

    return load_task_dir(tiny_task_dir, name="tiny-agreement", metric="agreement")


def _logits(classes: np.ndarray) -> np.ndarray:
    out = np.zeros((len(classes), 2))
    out[np.arange(len(classes)), classes] = 1.0
    return out


def test_the_drop_range_is_exact_once_every_example_is_seen_and_covers_before():
    rng = np.random.default_rng(0)
    total = 400
    labels = rng.integers(0, 2, total)
    fp32 = np.where(rng.random(total) < 0.85, labels, 1 - labels)  # fp32 right on ~85%
    config = np.where(rng.random(total) < 0.04, 1 - fp32, fp32)  # differs from fp32 on ~4%
    drops = {
        "accuracy": ((fp32 == labels).sum() - (config == labels).sum()) / total,
        "agreement": (config != fp32).sum() / total,
    }
    for metric, true_drop in drops.items():
        low, high = drop_range(metric, _logits(config), labels, _logits(fp32), total, 0.05)
        assert low == pytest.approx(true_drop) and high == pytest.approx(true_drop)
        misses = 0
        for _ in range(200):  # a uniform random sample seen first, as the slices are
            order = rng.permutation(total)[:100]
            low, high = drop_range(
                metric, _logits(config[order]), labels[order], _logits(fp32[order]), total, 0.025
            )
            assert low <= high
            misses += not low - 1e-12 <= true_drop <= high + 1e-12
        assert misses / 200 <= 0.05  # each side at 0.025
    assert drop_range("macro_f1", _logits(config), labels, _logits(fp32), total, 0.05) is None


def test_decided_tells_within_and_beyond_the_bar_and_waits_while_the_range_straddles_it():
    look = {"look": 2, "examples_seen": 48, "examples_total": 192, "metric_so_far": 1.0}
    look["metric_ceiling"] = 1.0
    within = decided({**look, "drop_low": 0.0, "drop_high": 0.008}, 0.01)
    assert within["max_drop"] == 0.01 and "within --max-drop 1 point" in within["reason"]
    assert "48 of 192" in within["reason"]
    beyond = decided({**look, "drop_low": 0.02, "drop_high": 0.05}, 0.01)
    assert "beyond" in beyond["reason"]
    assert decided({**look, "drop_low": 0.0, "drop_high": 0.02}, 0.01) is None
    assert decided({**look, "drop_low": 0.0, "drop_high": 0.0}, None) is None
    assert decided(look, 0.01) is None  # a metric without a drop range
    with pytest.raises(QsearchError, match="--max-drop"):
        PruneSettings(max_drop=1.5)


def test_scoring_stops_once_the_drop_is_decided_and_a_trial_records_why(agreement_task, tmp_path):
    """With a bar of 20 points, a sound config is decided within it after a slice or two;
    without the stop it is scored on every example, to the same range on the examples both
    saw. A trial timed first stops on either reason (`Evaluator._settled`)."""
    from types import SimpleNamespace

    from search.measure import make_session
    from search.quantize import quantize
    from search.scoring import Scorer

    path = quantize(MATMUL, agreement_task.model_path, tmp_path, None)
    scorer = Scorer(agreement_task, PruneSettings(drop=0.5))
    _, _, looks = scorer.score(make_session(path), {})
    seen = [x["examples_seen"] for x in looks]
    assert seen == [24, 48, 96, 192]
    assert all(x["drop_low"] <= x["drop_high"] for x in looks[:-1])
    progress = scorer.begin(make_session(path), {})
    scorer.advance(progress, until=1)
    scorer.advance(progress, stop=lambda look: decided(look, 0.2))
    why = progress.stopped
    assert why["max_drop"] == 0.2 and why["drop_high"] <= 0.2 and "within" in why["reason"]
    assert progress.seen == why["examples_seen"] < 192
    assert looks[seen.index(progress.seen)]["drop_high"] == why["drop_high"]
    metric = looks[seen.index(progress.seen)]["metric_so_far"]
    assert scorer.result(progress)[1] == pytest.approx(metric, abs=1e-5)

    ev = Evaluator(agreement_task, FAST, prune=PruneSettings(max_drop=0.2))
    try:
        look = looks[seen.index(progress.seen)]
        assert ev._settled([], look, SimpleNamespace(high=2.0)) == why
        ahead = [(1.0, 3.0)]  # faster at any accuracy it can have: dominated first
        assert "frontier_low" in ev._settled(ahead, look, SimpleNamespace(high=2.0))
        strict = Evaluator(agreement_task, FAST, prune=PruneSettings(max_drop=None))
        assert strict._settled([], look, SimpleNamespace(high=2.0)) is None
        strict.close()
    finally:
        ev.close()


def _study(*trials: tuple[float, float, dict]) -> optuna.Study:
    study = optuna.create_study(directions=["maximize", "maximize"])
    for accuracy, speedup, attrs in trials:
        study.add_trial(
            optuna.trial.create_trial(
                values=[accuracy, speedup],
                user_attrs={"speedup_low": speedup * 0.95, "speedup_high": speedup * 1.05} | attrs,
            )
        )
    study.set_user_attr("fp32_accuracy", 1.0)
    return study


def _partial(seen: int, ceiling: float, config: QuantConfig = MATMUL) -> dict:
    stop = {"examples_seen": seen, "metric_ceiling": ceiling, "reason": "decided"}
    return {"accuracy_examples": seen, "scoring_stopped": stop, "config": config.to_dict()}


def test_only_partly_scored_configs_the_frontier_may_hold_are_completed():
    study = _study(
        (1.0, 2.0, {}),  # scored in full
        (0.99, 2.5, _partial(96, 1.0)),  # faster: at its ceiling it leads the frontier
        (0.99, 1.5, _partial(96, 1.0)),  # slower than trial 0 at any accuracy it can have
        (0.90, 1.8, _partial(48, 0.97)),  # less accurate than trial 0 even at its ceiling ...
        (0.90, 3.0, _partial(48, 0.95)),  # ... unless it is faster than every other
    )
    assert to_complete(study, trial_rows(study)) == [4, 1]  # fastest first
    study.set_user_attr("accuracy_complete:4", {"accuracy": 0.93, "examples": 192})
    rows = trial_rows(study)
    assert rows.loc[4, "accuracy"] == 0.93 and rows.loc[4, "drop_points"] == 7.0
    assert rows["scored_on"].isna().tolist() == [True, False, False, False, True]
    assert to_complete(study, rows) == [1]


def test_the_frontier_is_completed_on_every_example_in_a_trials_child(agreement_task):
    """The end of a search: the partly scored trial the frontier may hold is scored again on
    every example in the evaluator's child, to the metric a full trial gives; the views then
    read it, and a config it dominates at its ceiling is left as it is."""
    full = Evaluator(agreement_task, FAST, prune=PruneSettings(drop=0.5, time_first=None))
    child = IsolatedEvaluator(agreement_task, FAST)
    try:
        truth = full.evaluate(MATMUL)
        gather = QuantConfig(operators=("Gather", "MatMul"))
        study = _study(
            (0.5, 2.0, _partial(24, 1.0)),  # the fastest, its mean on a slice set low on purpose
            (0.5, 1.2, _partial(24, 0.5, gather)),  # slower, and at most 0.5 on all examples
        )
        stages: list[str] = []
        assert complete_frontier(study, child, stages.append) == [0]
        record = completed(study)[0]
        assert record["accuracy"] == pytest.approx(truth.accuracy)
        assert record["examples"] == 192 and record["graph_sha256"] == truth.attrs["graph_sha256"]
        assert "trial 0" in stages[0]
        rows = trial_rows(study)
        assert rows.loc[0, "accuracy"] == pytest.approx(truth.accuracy)
        assert best_row(study, 0.5).trial == 0
        assert list(rows["scored_on"].fillna(-1)) == [-1, 24]
        assert complete_frontier(study, child) == []  # done: nothing left, nothing redone
    finally:
        full.close()
        child.close()


def test_a_search_whose_trials_stop_scoring_reports_a_frontier_scored_on_every_example(
    workdir, tiny_task_dir, monkeypatch
):
    """`qsearch run` with every trial timed first and a bar of 50 points of agreement (a
    sound config's drop is decided within it after a slice or two): the trials keep fewer
    than the 192 examples, and before the search reports, each frontier config is scored on
    all of them."""
    import functools

    import search.pipeline
    from tests.conftest import invoke

    timed_first = functools.partial(PruneSettings, time_first=0)
    monkeypatch.setattr(search.pipeline, "PruneSettings", timed_first)
    args = ["run", "--task-dir", tiny_task_dir, "--metric", "agreement", "--beam", "2"]
    args += ["--trials", "3", "--max-drop", "0.5", "--prune-drop", "0.5"]
    args += ["--timing-seconds", "0.2", "--no-presets", "--no-seeds", "--no-confirm"]
    result = invoke(*args, "--no-report", "--study", "partial")
    assert result.exit_code == 0, result.output
    storage = f"sqlite:///{workdir}/studies/partial.db"
    study = optuna.load_study(study_name="partial", storage=storage)
    measured = [t for t in study.trials if "accuracy_looks" in t.user_attrs]
    stopped = [t for t in measured if t.user_attrs.get("accuracy_examples")]
    assert stopped and all(t.user_attrs["accuracy_examples"] < 192 for t in stopped)
    reasons = [t.user_attrs["scoring_stopped"]["reason"] for t in stopped]
    assert all("--max-drop 50 point(s)" in r or "where the frontier is" in r for r in reasons)
    whole = completed(study)
    front = pareto_rows(study)
    assert not front.empty and front["scored_on"].isna().all()
    partly = {t.number for t in stopped}
    assert {int(n) for n in front["trial"]} & partly  # partly scored when the search ended
    assert {int(n) for n in front["trial"]} & partly <= set(whole)
    assert all(whole[n]["examples"] == 192 for n in whole)


def test_a_partly_scored_metric_is_fp32s_plus_the_paired_difference(tiny_task, tmp_path):
    """Stopped after its first slice, a config's accuracy is fp32's on every example plus
    its paired difference on the 24 seen: a slice hard for both does not read as a drop."""
    from search.measure import make_session
    from search.quantize import quantize
    from search.scoring import Scorer

    path = quantize(MATMUL, tiny_task.model_path, tmp_path, None)
    scorer = Scorer(tiny_task, PruneSettings(drop=0.3))
    progress = scorer.begin(make_session(path), {})
    scorer.advance(progress, until=1)
    scorer.advance(progress, stop=lambda look: {"examples_seen": look["examples_seen"]})
    outputs, metric, _ = scorer.result(progress)
    n = len(outputs)
    refs = tiny_task.eval_references[:n]
    mine = float((outputs.argmax(-1) == refs).mean())
    fp32_seen = float((scorer.fp32_outputs[:n].argmax(-1) == refs).mean())
    assert n == 24 and metric == pytest.approx(scorer.fp32_accuracy + mine - fp32_seen)
