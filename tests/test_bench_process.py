"""benchmarks/confirm_process.py's code path, scaled down to the tiny task: an aged child
against fresh children, round by round (numbers are not checked: speed belongs to the
benchmark, these machines are noisy)."""

import json

from search.measure import TimingSettings
from tests.test_benchmarks import load


def test_confirm_process_times_aged_and_fresh_children_in_the_same_rounds(tiny_task, capsys):
    bench = load("confirm_process")
    timing = TimingSettings(seconds=0.2, min_blocks=2, block_pairs=1, target=1e-9)
    result = bench.run_benchmark(
        tiny_task, rounds=2, seconds=0.2, trials=2, timing=timing, progress=lambda _: None
    )
    names = list(bench.candidates())
    assert len(names) == 3 and len(set(result["configs"].values())) == 3
    assert len(result["aging_outcomes"]) == 2
    assert [r["first"] for r in result["raw"]] == ["aged", "fresh"]  # ABBA
    for row in result["raw"]:
        for arm in bench.ARMS:
            assert list(row[arm]) == names
            assert all(row[arm][n]["speedup"] > 0 and row[arm][n]["pairs"] > 0 for n in names)
    compared = result["aged_over_fresh"]
    assert set(compared) == {*names, "all configs"}
    for per in compared.values():
        assert set(per) == set(bench.MEASURES)
        for x in per.values():
            assert x["ratio"] > 0 and x["low"] <= x["ratio"] <= x["high"]
    bench.print_result(result)
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["benchmark"] == "confirm_process" and "raw" not in line
    assert line["cpu"] and set(line["aged_over_fresh"]) == set(compared)


def test_the_aged_child_runs_a_static_trial_even_in_a_short_run():
    bench = load("confirm_process")
    assert any(c.mode == "static" for c in bench.aging_configs()[:2])
