"""The benchmarks' own code paths, scaled down to the tiny task (numbers are not checked:
speed belongs to the benchmarks, these machines are noisy)."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

from search.measure import TimingSettings

ROOT = Path(__file__).resolve().parent.parent


def load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_measurement_stability_runs_three_methods_side_by_side(tiny_task):
    bench = load("measurement_stability")
    timing = TimingSettings(seconds=0.3, block_pairs=2, min_blocks=2, warmup_runs=1)
    rows = bench.run_benchmark(
        tiny_task, repeats=2, naive_seconds=0.1, timing=timing, progress=lambda _: None
    )
    assert [r["method"] for r in rows] == ["naive", "paired", "paired+load"]
    for row in rows:
        assert row["repeats"] == 2 and len(row["speedups"]) == 2
        assert row["median_speedup"] > 0 and row["cv_percent"] >= 0
    assert rows[0]["coverage"] is None
    assert all(0 <= r["coverage"] <= 1 for r in rows[1:])


def test_isolation_cost_compares_both_ways_on_the_same_configs(tiny_task):
    bench = load("isolation_cost")
    result = bench.run_benchmark(
        tiny_task, trials=2, timing=TimingSettings(seconds=0.2), progress=lambda _: None
    )
    assert result["trials"] == 2
    assert result["start_isolated_s"] > 0 and result["median_trial_isolated_s"] > 0
    assert result["isolated_over_in_process"] > 0


def test_trial_cost_runs_every_kind_through_both_pipelines(tiny_task_dir):
    from search.config import QuantConfig
    from search.early import PruneSettings
    from search.tasks.default import load_task_dir

    bench = load("trial_cost")
    # scored by agreement: the tiny model's own accuracy is near chance (see test_cheap_trials)
    task = load_task_dir(tiny_task_dir, name="tiny-agreement", metric="agreement")
    timing = TimingSettings(seconds=0.3, block_pairs=2, min_blocks=2, warmup_runs=1)
    # the tiny model's collapsing config (test_cheap_trials.COLLAPSING): minmax, seconds
    kinds = {
        **bench.KINDS,
        "collapsed": QuantConfig(
            mode="static",
            format="QDQ",
            operators=("Add", "LayerNormalization", "MatMul", "Softmax"),
        ),
    }
    result = bench.run_benchmark(task, 1, timing, PruneSettings(drop=0.2), lambda _: None, kinds)
    rows = {(r["kind"], r["pipeline"]): r for r in result["rows"]}
    assert set(rows) == {
        *((k, p) for k in ("dynamic", "static", "collapsed") for p in ("qsearch", "naive")),
        ("same-graph", "qsearch"),
    }
    assert rows[("collapsed", "qsearch")]["outcomes"] == ["pruned"]
    assert rows[("same-graph", "qsearch")]["outcomes"] == ["same graph"]
    assert rows[("collapsed", "qsearch")]["timing"] == 0.0  # pruned before timing
    assert all(r["trial"] > 0 for r in rows.values())
    assert set(result["ratios"]) >= {"median_trial_over_naive", "collapsed_over_full"}
    profile = bench.warmup_profile(task, repeats=1, runs=2)
    assert set(profile) == {"fp32", "int8", "int8 after slice"}


def test_trial_cost_measures_the_main_jobs_own_trials(tiny_task_dir):
    """--search: a real beam-4 search on the default space, its trials' costs by outcome, and
    the naive pipeline on some of the same configs."""
    bench = load("trial_cost")
    timing = TimingSettings(seconds=0.3)
    mix = bench.search_mix(tiny_task_dir, 3, timing, naive_sample=2, progress=lambda _: None)
    assert mix["trials"] >= 3
    assert set(mix["by_outcome"]) <= {"complete", "raced", "pruned", "same graph", "failed"}
    assert sum(row["trials"] for row in mix["by_outcome"].values()) == mix["trials"]
    assert mix["naive_sampled"] == 2
    assert mix["median_trial_s"] > 0 and mix["naive_median_trial_s"] > 0
    # the ratio of the unrounded seconds; each second is rounded to 0.005, the ratio to 0.0005
    naive = mix["naive_median_trial_s"]
    ratio = mix["median_trial_s"] / naive
    assert abs(mix["median_over_naive"] - ratio) <= 0.0005 + 0.005 * (1 + ratio) / (naive - 0.005)


def test_node_scopes_times_every_candidate_round_robin(tiny_task):
    bench = load("node_scopes")
    result = bench.run_benchmark(tiny_task, rounds=2, seconds=0.2, progress=lambda _: None)
    names = [r["config"] for r in result["rows"]]
    assert names == list(bench.candidates()) and len(names) == 7
    for row in result["rows"]:
        assert len(row["rounds"]) == 2 and row["low"] <= row["speedup"] <= row["high"]
    scopes = {bench.candidates()[n].matmul_scope for n in names}
    assert scopes == {"all", "weights"}
    # Optimum's four presets are two configs: one row each, every preset named once
    presets = [n for n in names if n.startswith(bench.PRESET_PREFIX)]
    assert len(presets) == 2 and len({bench.candidates()[n] for n in presets}) == 2
    assert sorted("/".join(presets).replace("optimum ", "").replace(" preset", "").split("/")) == [
        "arm64",
        "avx2",
        "avx512",
        "avx512_vnni",
    ]
    vs = result["versus_presets"]
    assert vs is None or (vs["preset"] in presets and vs["best"] not in presets)


def test_the_scopes_benchmark_compares_the_fastest_row_within_the_bar_with_the_fastest_preset():
    bench = load("node_scopes")

    def row(name, drop, rounds):
        return {"config": name, "drop_points": drop, "rounds": rounds, "speedup": rounds[0]}

    rows = [
        row("fast but inaccurate", 1.5, [3.0, 3.0]),
        row("ours", 0.4, [2.4, 2.6]),
        row("ours, slower", -0.5, [2.2, 2.2]),
        row("optimum a preset", 0.0, [2.0, 2.0]),
        row("optimum b preset", 0.0, [1.2, 2.5]),
    ]
    vs = bench.versus_presets(rows)
    # the fastest preset by speedup is "a"; the ratio is taken round by round: 1.2 and 1.3
    assert vs["best"] == "ours" and vs["preset"] == "optimum a preset"
    assert vs["ratio"] == pytest.approx((1.2 * 1.3) ** 0.5)
    assert vs["low"] < vs["ratio"] < vs["high"]
    assert bench.versus_presets(rows, max_drop=-1.0) is None  # nothing within the bar
    assert bench.versus_presets(rows[:3]) is None  # no preset measured


def test_confirmation_compares_sequential_slots_and_interleaved_rounds_on_the_same_configs(
    tiny_task, capsys
):
    bench = load("confirmation")
    timing = TimingSettings(seconds=0.2, min_blocks=2, block_pairs=1)
    result = bench.run_benchmark(
        tiny_task, repeats=2, seconds=0.2, rounds=2, progress=lambda _: None, timing=timing
    )
    names = list(bench.candidates())
    assert len(names) == 4 and len(set(result["configs"].values())) == 4
    for method in bench.METHODS:
        s = result[method]
        assert set(s["speedup_cv"]) == set(names) and len(s["pairs"]) == 6  # 4 choose 2
        assert all(cv >= 0 for cv in s["speedup_cv"].values())
        for p in s["pairs"].values():
            assert p["cv"] >= 0 and 0 <= p["same_order"] <= 2 and p["median_ratio"] > 0
        assert s["worst_pair_cv"] == max(p["cv"] for p in s["pairs"].values())
        assert 0 <= s["same_order"] <= s["repeats"] == 2 and 0 <= s["coverage"] <= 1
        assert sorted(s["order"]) == sorted(names)
        runs = result["runs"][method]
        assert len(runs) == 2 and all(len(r) == 4 for r in runs)
        assert all(c["low"] <= c["speedup"] <= c["high"] for r in runs for c in r)
    for method in bench.METHODS[1:]:  # every round-robin method
        assert all(c["blocks"] == len(c["rounds"]) == 2 for r in result["runs"][method] for c in r)
        assert set(result[method]["persistent_sd"]) == set(names)
        # one other repeat per config is no evidence of drift: the default floor
        assert result[method]["study_floors"] == [0.05, 0.05]
        assert 0 <= result[method]["coverage_study_floor"] <= 1
        assert all(sd >= 0 for sd in result[method]["persistent_sd"].values())
    # a new child every repeat (2), or every round (2 repeats x 2 rounds), or two each repeat
    assert result["children"] == {
        "round_robin_child": 2,
        "round_robin_process": 2 * 2,
        "round_robin_children": 2 * 2,
        "round_robin_direct": 2,
    }
    for method in bench.METHODS[1:]:
        need = result[method]["for_target"]  # what a 1% ratio CV would take, from the rounds
        assert need["pairs_needed"] >= 1 and len(need["pair_sd"]) == 4
        assert need["times_the_timing"] == pytest.approx(
            need["pairs_needed"] / need["pairs_per_config"], rel=0.01
        )
    assert result["sequential"]["for_target"] is None  # no rounds: nothing to scale
    assert set(result["round_robin_children"]["process_sd"]) == set(names)
    assert result["round_robin_child"]["process_sd"] == {}  # one process: nothing to compare
    assert result["sequential"]["persistent_sd"] == {}  # one block a repeat: nothing to split
    bench.print_result(result)
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(line) >= {*bench.METHODS, "configs"} and "runs" not in line


def test_confirmation_reads_each_repeats_floor_from_the_other_repeats(tmp_path, capsys):
    import numpy as np

    bench = load("confirmation")
    # 4 configs x 4 repeats; each repeat reads every config 6% high or low, its rounds agree
    repeats = [
        [{"rounds": [level * (1.06 if r % 2 else 0.94)] * 3} for level in (1.5, 1.8, 2.0, 2.4)]
        for r in range(4)
    ]
    medians = np.median([[c["rounds"][0] for c in rep] for rep in repeats], axis=0)
    held = bench.held_out_floors(repeats, medians)
    assert len(held["study_floors"]) == 4 and all(f > 0.06 for f in held["study_floors"])
    assert held["coverage_study_floor"] == 1.0  # a 5% floor would cover none of them
    # a saved run is summarized again without timing anything
    for rep in repeats:
        for c in rep:
            c |= {"speedup": c["rounds"][0], "low": c["rounds"][0] / 1.05,
                  "high": c["rounds"][0] * 1.05}  # fmt: skip
    names = ["a", "b", "c", "d"]
    saved = {"cpu": "x", "configs": dict.fromkeys(names, "?"), "seconds_per_config": 1,
             "rounds": 3, "methods": ["round_robin"], "runs": {"round_robin": repeats}}  # fmt: skip
    (tmp_path / "run.json").write_text(json.dumps(saved))
    import sys

    argv, sys.argv = sys.argv, ["confirmation.py", "--summarize", str(tmp_path / "run.json")]
    try:
        bench.main()
    finally:
        sys.argv = argv
    out = capsys.readouterr().out
    assert "coverage 0% (at least 90%), 100% with the floor read from the other repeats" in out


def test_confirmation_says_what_a_one_percent_ratio_would_take_from_the_rounds_spread():
    """Rounds of 4 pairs alternating 2% above and below a config's level: one pair's SD is
    the rounds' spread times sqrt(4), and two such configs need (s^2 + s^2) / 1%^2 pairs each."""
    import math

    bench = load("confirmation")
    d, p = 0.02, 4
    quiet = [1.0] * 6  # a config whose rounds agree exactly
    repeats = [
        [
            {
                "rounds": [lvl * math.exp(d if k % 2 else -d) for k in range(6)],
                "round_pairs": [p] * 6,
            }
            for lvl in (1.5, 1.8, 2.0)
        ]
        + [{"rounds": [2.4 * x for x in quiet], "round_pairs": [p] * 6}]
        for _ in range(3)
    ]
    need = bench.pairs_for(repeats)
    sigma2 = d * d * 6 / 5 * p  # the rounds' variance (ddof 1) times their pairs
    assert need["pair_sd"][:3] == pytest.approx([math.sqrt(sigma2)] * 3, rel=1e-4)
    assert need["pair_sd"][3] == pytest.approx(0.0, abs=1e-9)
    assert need["pairs_needed"] == math.ceil(2 * sigma2 / 0.01**2) == 39
    assert need["pairs_per_config"] == 24 and need["times_the_timing"] == pytest.approx(
        39 / 24, abs=0.01
    )
    for rep in repeats:  # saved before rounds recorded their pairs: nothing to say
        for c in rep:
            del c["round_pairs"]
    assert bench.pairs_for(repeats) is None


def test_confirmation_runs_only_the_methods_asked_for(tiny_task, capsys):
    bench = load("confirmation")
    timing = TimingSettings(seconds=0.2, min_blocks=2, block_pairs=1)
    methods = ("round_robin", "sequential")
    result = bench.run_benchmark(
        tiny_task, 2, 0.2, 2, progress=lambda _: None, timing=timing, methods=methods
    )
    assert result["methods"] == list(methods) and "slots" not in result
    assert all(len(result["runs"][m]) == 2 for m in methods) and set(result["runs"]) == set(methods)
    bench.print_result(result)
    out = capsys.readouterr().out
    assert "slots" not in out and "round_robin:" in out and "sequential:" in out
    assert result["children"] == {}  # no child started for methods that run in-process


def test_timing_noise_reads_sessions_pairs_and_estimators(tiny_task):
    bench = load("timing_noise")
    timing = TimingSettings(seconds=0.2, block_pairs=1, min_blocks=2, warmup_runs=1)
    r = bench.run_benchmark(tiny_task, sessions=3, runs=2, seconds=0.1, cycles=4, chunk=2,
                            timing=timing)  # fmt: skip
    assert len(r["sessions"]["speedups"]) == 2 and len(r["sessions"]["speedups"][0]) == 3
    assert r["sessions"]["sd_session_percent"] >= 0 and r["sessions"]["sd_run_percent"] >= 0
    batches = len(tiny_task.timing_batches)
    assert r["pairs"] == 4 * batches and len(r["per_batch_speedup"]) == batches
    assert r["chunks"] == 2 and r["chunk_pairs"] == 2 * batches
    assert set(r["estimators"]) == set(bench.ESTIMATORS)
    c = r["clocks"]
    # the timing thread's CPU time is within its wall time; how close depends on the machine's
    # load, so which run's time lands where is checked on models built to burn or sleep below
    assert 0 < c["cpu_share_of_wall"] <= 1.05
    assert c["cpu_speedup"] > 0 and c["cpu_pair_sd_percent"] >= 0


def test_timing_noise_puts_each_run_cpu_time_on_its_own_model():
    """One model computes, the other sleeps, in the timing loop's alternating ABBA pairs:
    the CPU time of every computing run lands on its side, the sleeping side's stays ~0."""
    import time
    from types import SimpleNamespace

    bench = load("timing_noise")

    class Busy:
        def run(self, _outputs, _inputs):
            end = time.thread_time() + 0.004
            while time.thread_time() < end:
                pass

    class Sleepy:
        def run(self, _outputs, _inputs):
            time.sleep(0.004)

    batches = [type("B", (), {"inputs": {}, "__len__": lambda self: 1})() for _ in range(3)]
    evaluator = SimpleNamespace(timing_batches=batches, baseline=Busy())
    timed = bench.pairs(evaluator, Sleepy(), cycles=3)
    assert timed["base"].shape == timed["base_cpu"].shape == (3, 3)
    assert (timed["base_cpu"] >= 0.0035).all()  # every fp32 run's CPU time is its own
    assert (timed["cand_cpu"] < 0.002).all()  # and never the sleeper's
    assert (timed["cand"] >= 0.0035).all()  # though the sleeper's wall time is as long
    assert timed["steal"] is None or 0.0 <= timed["steal"] < 1.0


def test_timing_noise_clocks_compare_cpu_with_wall_on_known_pairs():
    import numpy as np

    bench = load("timing_noise")
    rng = np.random.default_rng(1)
    base = rng.uniform(0.4, 0.5, size=(8, 4))
    cand = base / 2 * rng.uniform(0.9, 1.1, size=(8, 4))
    timed = {"base": base, "cand": cand, "base_cpu": base * 0.9, "cand_cpu": cand * 0.9,
             "steal": 0.01}  # fmt: skip
    c = bench.clocks(timed, chunk=2)
    wall = bench.pair_noise(base, cand, chunk=2)
    assert c["cpu_share_of_wall"] == pytest.approx(0.9)
    assert c["cpu_pair_sd_percent"] == pytest.approx(wall["pair_sd_percent"])  # a scale only
    assert c["cpu_speedup"] == pytest.approx(wall["estimators"]["mean of log ratios"]["speedup"])
    assert c["steal_percent"] == pytest.approx(1.0)


def test_timing_noise_statistics_on_known_pairs():
    """Candidate exactly twice as fast, times of a pair off by a known factor per pair:
    every estimator reads 2x, and the pair SD is the factors' own once per-batch means go."""
    import numpy as np

    bench = load("timing_noise")
    rng = np.random.default_rng(0)
    base = rng.uniform(0.4, 0.5, size=(8, 4)) * np.array([1.0, 1.2, 0.8, 1.1])
    c, i = np.indices((8, 4))
    wobble = np.where((c + i) % 2 == 0, 1.05, 1 / 1.05)  # +-5%, a checkerboard
    cand = base / 2 * wobble
    r = bench.pair_noise(base, cand, chunk=2)
    for e in r["estimators"].values():
        assert e["speedup"] == pytest.approx(2.0, rel=0.06)
    assert r["estimators"]["mean of log ratios"]["speedup"] == pytest.approx(2.0, rel=1e-9)
    assert r["estimators"]["mean of log ratios"]["sd_percent"] == pytest.approx(0.0, abs=1e-9)
    expected = 100 * np.std(np.log(wobble) - np.log(wobble).mean(axis=0), ddof=1)
    assert r["pair_sd_percent"] == pytest.approx(expected)
    assert r["pairs"] == 32 and r["chunks"] == 4


def test_smooth_quant_scores_and_times_each_base_with_and_without_it(tiny_task, capsys):
    bench = load("smooth_quant")
    timing = TimingSettings(seconds=0.2, min_blocks=2, block_pairs=1)
    result = bench.run_benchmark(
        tiny_task, [0.0, 0.5], rounds=2, seconds=0.2, timing=timing, progress=lambda _: None
    )
    rows = result["rows"]
    assert [(r["base"], r["alpha"]) for r in rows] == [
        (base, alpha) for base in bench.BASES for alpha in (0.0, 0.5)
    ]
    for r in rows:
        assert r["error"] is None and r["speedup"]["low"] <= r["speedup"]["speedup"]
        assert 0 <= r["metric"] <= 1
        # each smoothed config is compared with its own base, in the same rounds
        assert (r["vs_base"] is None) == (r["alpha"] == 0.0)
    assert all("SmoothQuant alpha 0.5" in r["config"] for r in rows if r["alpha"])
    bench.print_result(result)
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["benchmark"] == "smooth_quant" and len(line["rows"]) == 4


def test_lent_spread_gives_both_intervals_from_the_same_blocks(tiny_task):
    bench = load("lent_spread")
    timing = TimingSettings(seconds=0.3, block_pairs=2, min_blocks=2, warmup_runs=1)
    rows = bench.run_benchmark(tiny_task, repeats=3, timing=timing, progress=lambda _: None)
    assert [r["config"] for r in rows] == list(bench.CONFIGS)
    for row in rows:
        assert row["repeats"] == 3 and row["median_speedup"] > 0
        for kind in ("own", "lent"):
            assert 0 <= row[f"{kind}_coverage"] <= 1
            assert row[f"{kind}_median_half_width_percent"] >= 100 * math.log1p(timing.floor) - 1e-6


def test_direct_pairs_time_two_configs_against_each_other_beside_fp32(tiny_task, capsys):
    bench = load("direct_pairs")
    r = bench.run_benchmark(tiny_task, cycles=2, picks=(0, 3))
    batches = len(tiny_task.timing_batches)
    assert set(r["kinds"]) == set(bench.KINDS)
    for k in r["kinds"].values():
        assert k["pairs"] == 2 * batches and k["seconds"] > 0 and k["pair_sd"] >= 0
    assert r["ratio_direct"] > 0 and r["ratio_via_fp32"] > 0
    bench.print_result(r)
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["benchmark"] == "direct_pairs" and line["A"] == "all MatMuls"


def test_direct_pairs_statistics_on_known_pairs():
    """A is exactly 2x fp32's speed and B 2.2x: both ways read A/B = 2/2.2; a pair's SD is
    the known wobble once per-batch means go; equal pairs and seconds give the variance
    ratio as the saving."""
    import numpy as np

    bench = load("direct_pairs")
    wobble = [0.05, -0.05, 0.05, -0.05]
    pairs = {
        kind: {"batch": [0, 0, 1, 1], "log": [lvl + w for w in wobble],
               "x_first": [True, False, True, False], "seconds": 10.0}
        for kind, lvl in (("fp32/A", math.log(2)), ("fp32/B", math.log(2.2)),
                          ("A/B", math.log(2 / 2.2) * -1))
    }  # fmt: skip
    r = bench.summarize(pairs)
    assert r["ratio_via_fp32"] == pytest.approx(2 / 2.2) and r["ratio_direct"] == pytest.approx(
        2 / 2.2
    )
    assert r["difference"] == pytest.approx(0.0, abs=1e-12)
    sd = float(np.std([0.05, -0.05, 0.05, -0.05], ddof=1))
    assert r["kinds"]["A/B"]["pair_sd"] == pytest.approx(sd)
    assert r["kinds"]["A/B"]["first_went_first"] - r["kinds"]["A/B"][
        "second_went_first"
    ] == pytest.approx(0.1)
    # via fp32: two pairs' variance for 20 s; direct: one pair's for 10 s -> 4x
    assert r["direct_needs_one_over"] == pytest.approx(4.0)


def test_op_profile_splits_each_config_into_int8_and_fp32_parts(tiny_task):
    bench = load("op_profile")
    only = ["weight MatMuls, per-tensor", "all MatMuls, per-tensor"]
    result = bench.run_benchmark(
        tiny_task, only, target=2.0, passes=1, seconds=0.2, progress=lambda _: None
    )
    assert "MatMul" in result["fp32_ops"] and not any(map(bench.is_int8, result["fp32_ops"]))
    rows = {row["config"]: row for row in result["rows"]}
    assert sorted(rows) == sorted(only)
    weights, every = rows[only[0]], rows[only[1]]
    # the weight scope leaves the attention products fp32; every-MatMul quantizes them all
    assert "MatMul" in weights["ops"] and "MatMul" not in every["ops"]
    for row in rows.values():
        assert any(map(bench.is_int8, row["ops"])) and row["wall_speedup"] > 0
        assert row["int8_ms"] + row["fp32_rest_ms"] == pytest.approx(sum(row["ops"].values()))
        assert row["cap"] == pytest.approx(result["fp32_ms"] / row["fp32_rest_ms"])


def test_op_profile_works_back_from_the_target_by_amdahl():
    bench = load("op_profile")
    ops = {"DynamicQuantizeMatMul": 50.0, "DynamicQuantizeLinear": 10.0, "Softmax": 40.0}
    split = bench.amdahl(300.0, ops, target=2.0)
    # 2x of 300 ms is 150 ms; 40 ms stay fp32, so the 60 ms int8 part may take 110 ms
    assert split["int8_ms"] == 60.0 and split["fp32_rest_ms"] == 40.0
    assert split["cap"] == 7.5 and split["kernel_speedup"] == 3.0
    assert split["int8_faster_needed"] == pytest.approx(60 / 110)
    assert bench.amdahl(300.0, ops, target=5.0)["int8_faster_needed"] == pytest.approx(60 / 20)
    assert bench.amdahl(300.0, ops, target=8.0)["int8_faster_needed"] is None  # past the cap
    int8 = ["QLinearMatMul", "QGemm", "QAttention", "MatMulInteger", "MatMulIntegerToFloat"]
    int8 += ["DynamicQuantizeMatMul", "QuantizeLinear", "DequantizeLinear", "QLinearSoftmax"]
    fp32 = ["MatMul", "Softmax", "Gelu", "SkipLayerNormalization", "QuickGelu", "Gather"]
    assert all(map(bench.is_int8, int8)) and not any(map(bench.is_int8, fp32))


def test_op_profile_leaves_the_warm_runs_out():
    bench = load("op_profile")

    def run(ts):
        return {"name": "model_run", "cat": "Session", "ts": ts, "dur": 5}

    def node(ts, op, dur):
        name = f"n{ts}_kernel_time"
        return {"name": name, "cat": "Node", "ts": ts, "dur": dur, "args": {"op_name": op}}

    events = [run(0), node(1, "MatMul", 100), run(10), node(11, "MatMul", 7), node(12, "Add", 1)]
    events += [run(20), node(21, "MatMul", 9), {"name": "x_fence_before", "cat": "Node", "ts": 22}]
    times, runs = bench.op_times(events, skip_runs=1)
    assert runs == 2 and times == {"MatMul": 16, "Add": 1}
    assert bench.op_times(events)[0]["MatMul"] == 116


def test_weight_only_times_matmulnbits_beside_the_dynamic_reference(tiny_task):
    bench = load("weight_only")
    result = bench.run_benchmark(
        tiny_task, rounds=2, seconds=0.2, variants=((4, 16),), progress=lambda _: None
    )
    names = [row["config"] for row in result["rows"]]
    assert names[0] == bench.REFERENCE and len(names) == 2 and "int4" in names[1]
    for row in result["rows"]:
        assert len(row["rounds"]) == 2 and row["low"] <= row["speedup"] <= row["high"]


def test_weight_only_replaces_exactly_the_weight_matmuls(tiny_task, tmp_path):
    import onnx

    bench = load("weight_only")
    model = onnx.load(str(tiny_task.model_path))
    constants = {i.name for i in model.graph.initializer}
    ops = [n.op_type for n in model.graph.node]
    weights = sum(n.op_type == "MatMul" and n.input[1] in constants for n in model.graph.node)
    out = bench.weight_only(tiny_task.model_path, tmp_path / "w.onnx", bits=8, block=16)
    quantized = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert quantized.count("MatMulNBits") == weights > 0
    assert quantized.count("MatMul") == ops.count("MatMul") - weights  # attention products
