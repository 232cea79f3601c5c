"""Cheap trials on the tiny BERT, for real: the calibration cache on disk, same quantized graph
= same trial, pruning hopeless configs from a slice of the data, and the pieces' statistics."""

import pickle

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from search.calibrate import CalibrationCache, compute_ranges
from search.config import QuantConfig
from search.context import TrialContext, trial_context
from search.early import PruneSettings, dominated
from search.errors import QsearchError, SameGraph, TrialPruned
from search.measure import TimingSettings, make_session
from search.objective import Evaluator
from search.quantize import quantize
from search.results import failed_rows, pruned_rows, trial_rows
from search.runner import _known, evaluate_into, evaluated_count
from search.stats import population_upper_bound

FAST = TimingSettings(seconds=0.3, warmup_runs=1, block_pairs=2, min_blocks=2)
# Static QDQ of the residual Adds, Softmax and LayerNormalization: far from fp32's classes.
COLLAPSING = QuantConfig(
    mode="static", format="QDQ", operators=("Add", "LayerNormalization", "MatMul", "Softmax")
)


@pytest.fixture(scope="module")
def evaluator(tiny_task):
    ev = Evaluator(tiny_task, FAST)
    yield ev
    ev.close()


@pytest.fixture(scope="module")
def agreement_task(tiny_task_dir):
    """The tiny model scored by agreement with fp32 (its own accuracy is near chance, so
    only agreement separates a collapsed config from a sound one)."""
    from search.tasks.default import load_task_dir

    return load_task_dir(tiny_task_dir, name="tiny-agreement", metric="agreement")


def test_quantizing_a_config_twice_writes_identical_bytes(tiny_task, tmp_path):
    ranges = compute_ranges(tiny_task, COLLAPSING)
    for config, r in ((QuantConfig(operators=("MatMul",)), None), (COLLAPSING, ranges)):
        a = quantize(config, tiny_task.model_path, tmp_path / f"{config.key}-a", r)
        b = quantize(config, tiny_task.model_path, tmp_path / f"{config.key}-b", r)
        assert a.read_bytes() == b.read_bytes()


def test_ranges_read_back_from_disk_give_the_logits_of_fresh_calibration(tiny_task, tmp_path):
    config = QuantConfig(mode="static", format="QOperator", operators=("MatMul",))
    first = CalibrationCache(tiny_task, directory=tmp_path)
    first.ranges(config)
    assert first.computed == 1 and len(list(tmp_path.glob("*.npz"))) == 1
    second = CalibrationCache(tiny_task, directory=tmp_path)  # a new run: reads the file
    reused = second.ranges(config)
    assert second.computed == 0
    fresh = compute_ranges(tiny_task, config)
    a = make_session(quantize(config, tiny_task.model_path, tmp_path / "a", reused))
    b = make_session(quantize(config, tiny_task.model_path, tmp_path / "b", fresh))
    for batch in tiny_task.eval_batches[:2]:
        np.testing.assert_array_equal(a.run(None, batch.inputs)[0], b.run(None, batch.inputs)[0])
    # another method or calibration data is another key
    assert first.key(config) != first.key(config.replace(calibration="entropy"))


def test_a_corrupt_cache_file_is_ignored_and_rewritten(tiny_task, tmp_path):
    config = QuantConfig(mode="static", format="QDQ", operators=("MatMul",))
    CalibrationCache(tiny_task, directory=tmp_path).ranges(config)
    (path,) = tmp_path.glob("*.npz")
    path.write_bytes(b"not a numpy file")
    cache = CalibrationCache(tiny_task, directory=tmp_path)
    assert cache.ranges(config) is not None and cache.computed == 1
    assert CalibrationCache(tiny_task, directory=tmp_path)._read(path.stem) is not None
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left


def test_a_config_that_quantizes_to_a_known_graph_copies_that_trial(evaluator):
    study = optuna.create_study(directions=["maximize", "maximize"])
    known: dict[str, int] = {}
    matmul = QuantConfig(operators=("MatMul",))
    assert evaluate_into(study, study.ask(), matmul, evaluator, known) == "complete"
    # Conv is not in the model: the quantized file is byte for byte the same
    same = QuantConfig(operators=("Conv", "MatMul"))
    assert evaluate_into(study, study.ask(), same, evaluator, known) == "duplicate"
    first, copy = study.trials
    assert copy.user_attrs["same_graph_as"] == copy.user_attrs["duplicate_of"] == 0
    assert copy.user_attrs["graph_sha256"] == first.user_attrs["graph_sha256"]
    assert copy.user_attrs["config_key"] == same.key != matmul.key
    assert copy.values == first.values and copy.state == TrialState.COMPLETE
    assert evaluated_count(study) == 1  # a copy is not a second evaluation
    assert _known(study) == {matmul.key: 0, same.key: 1}
    assert trial_context(study).known_graphs == {first.user_attrs["graph_key"]: 0}
    # the same file run under other session options is another trial
    fused = matmul.replace(disabled_fusions=["SkipLayerNormFusion"])
    sha = first.user_attrs["graph_sha256"]
    assert evaluator.graph_key(fused, sha) != evaluator.graph_key(matmul, sha)


def test_a_hopeless_config_is_pruned_early_with_its_evidence(agreement_task):
    evaluator = Evaluator(agreement_task, FAST, prune=PruneSettings(drop=0.2))
    try:
        study = optuna.create_study(directions=["maximize", "maximize"])
        known: dict[str, int] = {}
        assert evaluate_into(study, study.ask(), COLLAPSING, evaluator, known) == "pruned"
        trial = study.trials[0]
        evidence = trial.user_attrs["prune_evidence"]
        assert trial.state == TrialState.PRUNED
        assert evidence["examples_seen"] == 24 and evidence["examples_total"] == 192
        assert evidence["metric_so_far"] <= evidence["metric_ceiling"] < evidence["threshold"]
        assert evidence["threshold"] == pytest.approx(0.8)
        assert "timing" not in trial.user_attrs["phase_seconds"]
        assert (
            trial.user_attrs["graph_sha256"] and "pruned after" in trial.user_attrs["fail_reason"]
        )
        assert evaluated_count(study) == 1  # an answer: it counts toward the budget
        # never evaluated again: the same config is a copy, its graph is known
        assert evaluate_into(study, study.ask(), COLLAPSING, evaluator, known) == "duplicate"
        assert study.trials[1].state == TrialState.PRUNED and evaluated_count(study) == 1
        assert trial_context(study).known_graphs == {trial.user_attrs["graph_key"]: 0}
        rows = pruned_rows(study)
        assert list(rows["trial"]) == [0] and rows["seen"][0] == evidence["examples_seen"]
        assert list(failed_rows(study)["state"]) == ["PRUNED"]
        # a sound config goes through every look and is timed
        sound = evaluator.evaluate(QuantConfig(operators=("Gather",)))
        looks = sound.attrs["accuracy_looks"]
        assert [x["examples_seen"] for x in looks] == [24, 48, 96, 192]
        assert not any(x["hopeless"] for x in looks) and "timing" in sound.attrs
    finally:
        evaluator.close()


def test_no_pruning_below_a_drop_of_one(agreement_task):
    evaluator = Evaluator(agreement_task, FAST, prune=PruneSettings(drop=1.0))
    try:
        result = evaluator.evaluate(COLLAPSING)
        assert result.accuracy < 0.5 and result.attrs["timing"]["pairs"] > 0
    finally:
        evaluator.close()


def test_a_config_slower_than_the_frontier_stops_timing_early(evaluator):
    slow = TimingSettings(seconds=5, warmup_runs=1, block_pairs=2, min_blocks=2, floor=0.05)
    ev = Evaluator(evaluator.task, slow)
    try:
        ahead = TrialContext(frontier=((1.0, 1000.0),))  # an impossible frontier: raced at once
        result = ev.evaluate(QuantConfig(operators=("MatMul",)), ahead)
        timing = result.attrs["timing"]
        assert timing["stopped"] == "raced" and timing["race_below"] == 1000.0
        assert result.attrs["speedup_high"] < 1000.0
        # Two clean blocks already put the upper bound far below 1000x. A block that ran under
        # another process's load widens the interval (doubled), so a busy machine may need one
        # more block before the race is decided: never the budget.
        assert timing["blocks"] == 2 or timing["loaded_blocks"] > 0
    finally:
        ev.close()


def test_evaluation_slices_are_nested_random_samples_of_every_example(tiny_task):
    slices = tiny_task.eval_slices
    seen = np.concatenate([b.index for part in slices for b in part])
    assert sorted(seen.tolist()) == list(range(len(tiny_task.eval_texts)))
    first = [len(tiny_task.eval_texts[i]) for b in slices[0] for i in b.index]
    shortest = sorted(len(t) for t in tiny_task.eval_texts)[: len(first)]
    assert np.mean(first) > 1.5 * np.mean(shortest)  # not the shortest sentences first
    labels = np.asarray(tiny_task.eval_labels)[seen]
    np.testing.assert_array_equal(tiny_task.eval_references, labels)


def test_population_upper_bound_is_exact_at_the_end_and_covers():
    assert population_upper_bound(150, 192, 192, 0.01) == 150  # everything seen: exact
    assert population_upper_bound(0, 0, 100, 0.01) == 100  # nothing seen: anything goes
    assert population_upper_bound(10, 20, 100, 0.01) > population_upper_bound(10, 20, 100, 0.1)
    rng = np.random.default_rng(0)
    population = np.array([1] * 700 + [0] * 300)
    misses = 0
    for _ in range(300):
        sample = rng.permutation(population)[:125]
        misses += population_upper_bound(int(sample.sum()), 125, 1000, 0.05) < 700
    assert misses / 300 <= 0.05


def test_outcomes_and_contexts_pickle_for_a_worker_process():
    same = pickle.loads(pickle.dumps(SameGraph(3, {"graph_sha256": "ab"})))
    assert same.number == 3 and same.attrs == {"graph_sha256": "ab"}
    pruned = pickle.loads(pickle.dumps(TrialPruned("why", {"examples_seen": 8}, {"a": 1})))
    assert (pruned.reason, pruned.evidence, pruned.attrs) == ("why", {"examples_seen": 8}, {"a": 1})
    context = TrialContext(known_graphs={"k": 1}, frontier=((0.8, 2.0),))
    assert pickle.loads(pickle.dumps(context)) == context


def test_dominated_needs_a_frontier_point_as_accurate_as_the_ceiling_and_faster():
    look = {"look": 1, "examples_seen": 24, "examples_total": 192, "metric_so_far": 0.8}
    frontier = [(0.9, 2.0), (0.7, 3.0)]
    stop = dominated(frontier, {**look, "metric_ceiling": 0.85}, 1.9)
    assert stop["frontier_low"] == 2.0 and stop["examples_seen"] == 24
    assert "24 of 192" in stop["reason"]
    assert dominated(frontier, {**look, "metric_ceiling": 0.85}, 2.1) is None  # may be faster
    assert dominated(frontier, {**look, "metric_ceiling": 0.95}, 1.0) is None  # may be better


def test_timed_before_the_rest_is_scored_a_dominated_config_stops_scoring(agreement_task):
    """time_first=0: every config is timed after the first slice. Against a frontier it
    cannot reach, the scoring stops at that slice, and its metric is the slice's mean."""
    config = QuantConfig(operators=("MatMul",))
    first = Evaluator(agreement_task, FAST, prune=PruneSettings(drop=0.2, time_first=0))
    plain = Evaluator(agreement_task, FAST, prune=PruneSettings(drop=0.2, time_first=None))
    try:
        whole = plain.evaluate(config)
        assert [x["examples_seen"] for x in whole.attrs["accuracy_looks"]] == [24, 48, 96, 192]

        ahead = TrialContext(frontier=((1.0, 1000.0),))  # faster at any accuracy it can have
        stopped = first.evaluate(config, ahead)
        a = stopped.attrs
        assert a["scored_after_timing"] and a["accuracy_examples"] == 24
        assert a["scoring_stopped"]["frontier_low"] == 1000.0
        assert a["scoring_stopped"]["speedup_high"] < 1000.0
        assert a["timing"]["stopped"] == "raced"  # raced at the metric's ceiling
        assert [x["examples_seen"] for x in a["accuracy_looks"]] == [24]
        assert stopped.accuracy == pytest.approx(
            whole.attrs["accuracy_looks"][0]["metric_so_far"], abs=1e-5
        )

        study = optuna.create_study(directions=["maximize", "maximize"])
        for r in (whole, stopped):
            study.add_trial(
                optuna.trial.create_trial(values=[r.accuracy, r.speedup], user_attrs=r.attrs)
            )
        assert list(trial_rows(study)["scored_on"].fillna(-1)) == [-1, 24]
    finally:
        first.close()
        plain.close()


def test_scoring_resumed_after_a_pause_gives_the_metric_scored_at_once(agreement_task, tmp_path):
    """What a config timed between its first slice and the rest is scored on: the same
    outputs and metric as without the pause, every look taken."""
    from search.scoring import Scorer

    path = quantize(QuantConfig(operators=("MatMul",)), agreement_task.model_path, tmp_path, None)
    scorer = Scorer(agreement_task, PruneSettings(drop=0.2))
    outputs, metric, looks = scorer.score(make_session(path), {})
    progress = scorer.begin(make_session(path), {})
    scorer.advance(progress, until=1)
    assert progress.done == 1 and progress.seen == 24 and not progress.complete
    assert 0 < progress.rest_seconds() < float("inf")
    scorer.advance(progress, stop=lambda look: None)
    resumed, again, looks_again = scorer.result(progress)
    np.testing.assert_array_equal(resumed, outputs)
    assert again == metric and progress.complete and progress.stopped is None
    assert [x["examples_seen"] for x in looks_again] == [x["examples_seen"] for x in looks]


def test_a_config_is_timed_first_where_the_rest_of_its_scoring_costs_more(agreement_task):
    from search.scoring import Progress

    def progress(seconds: float) -> Progress:
        p = Progress(None, {}, slices=4, total=192, seconds=seconds, looks=[{"look": 1}])
        p.rows.append(np.zeros((24, 2)))
        return p

    def timed_first(prune: PruneSettings, seconds: float) -> bool:
        ev = Evaluator(agreement_task, TimingSettings(seconds=12), prune=prune)
        try:
            return ev._time_first(progress(seconds))
        finally:
            ev.close()

    # the rest, 168 examples, at the first 24's rate: 7x the slice, against 12 s of timing
    assert progress(1.0).rest_seconds() == pytest.approx(7.0)
    assert not timed_first(PruneSettings(), 1.0)  # 7 s < 12 s: score first, race on it
    assert timed_first(PruneSettings(), 2.0)  # 14 s > 12 s
    assert not timed_first(PruneSettings(time_first=2.0), 2.0)
    assert not timed_first(PruneSettings(time_first=None), 100.0)
    assert not timed_first(PruneSettings(race=False), 100.0)  # the stop is a race
    with pytest.raises(QsearchError, match="time_first"):
        PruneSettings(time_first=-1)


def test_a_worker_lends_its_trials_block_spread_to_the_next_trial(tiny_task):
    """Every unloaded trial timing adds its blocks' spread to the evaluator's, per pairs per
    block, and the next trial's interval borrows what was there when it began."""
    ev = Evaluator(tiny_task, TimingSettings(seconds=1.0, warmup_runs=1, block_pairs=2))
    try:
        first = ev.evaluate(QuantConfig(operators=("MatMul",))).attrs["timing"]
        assert first["spread_df"] == 0  # nothing lent before the first trial
        assert len(first["block_logs"]) == first["blocks"] >= 2
        lent = dict(ev.spread)
        expected = {} if first["loaded"] else {first["block_size"]: first["blocks"] - 1}
        assert {size: s.df for size, s in lent.items()} == expected
        second = ev.evaluate(QuantConfig(operators=("Gather", "MatMul"))).attrs["timing"]
        before = lent.get(second["block_size"])
        assert second["spread_df"] == (before.df if before else 0)
    finally:
        ev.close()


def test_a_trial_borrows_the_block_spread_its_study_records_for_this_host(tiny_task):
    """The study is the record: a resumed search (a new evaluator, nothing of its own) lends
    its first trial the spread of the trials the study holds from this host, loaded timings
    and other hosts' left out."""
    from search.liveness import HOST
    from search.stats import Spread

    def stored(logs, host=HOST, loaded=False, size=3):
        timing = {"block_size": size, "block_logs": logs, "loaded": loaded}
        attrs = {"timing": timing, "worker": {"host": host}, "loaded": loaded}
        attrs |= {"speedup_low": 1.0, "speedup_high": 2.0, "graph_key": f"g{len(logs)}{host}"}
        return optuna.trial.create_trial(values=[0.8, 1.5], user_attrs=attrs)

    study = optuna.create_study(directions=["maximize", "maximize"])
    for t in (
        stored([0.1, 0.3]),
        stored([0.2, 0.2, 0.5]),
        stored([0.0, 0.9], host="elsewhere"),
        stored([0.0, 0.9, 0.1, 0.4], loaded=True),
        stored([0.4]),  # one block: no spread
        stored([0.1, 0.2], size=5),
        stored([0.1, 0.2, 0.1], size=1),
        stored([0.3, 0.1, 0.4], size=2),
    ):
        study.add_trial(t)
    spread = trial_context(study).spread
    expected = Spread().add([0.1, 0.3]).add([0.2, 0.2, 0.5])
    assert spread[3].df == expected.df == 3
    assert spread[3].ss == pytest.approx(expected.ss)
    assert spread[5].df == 1 and set(spread) == {1, 2, 3, 5}

    ev = Evaluator(tiny_task, TimingSettings(seconds=1.0, warmup_runs=1, block_pairs=3))
    try:
        timing = ev.evaluate(QuantConfig(operators=("MatMul",)), trial_context(study))
        t = timing.attrs["timing"]
        assert t["block_size"] in (1, 2, 3)  # at most block_pairs: each has a stored spread
        assert t["blocks"] < 2 or t["spread_df"] == spread[t["block_size"]].df > 0
    finally:
        ev.close()
