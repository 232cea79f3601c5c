"""The model-size benchmark's code path, scaled down: a 2-layer BERT built and exported as the
benchmark builds BERT-base, every config run through the evaluator, one JSON line."""

from __future__ import annotations

import json

from tests.test_benchmarks import load

model_size = load("model_size")


def test_the_benchmark_reports_every_trial_and_the_budget(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("QSEARCH_HOME", str(tmp_path / "home"))
    code = model_size.main(
        ["--layers", "2", "--hidden", "64", "--eval-size", "48", "--calibration-size", "16"]
        + ["--seconds", "0.5", "--no-default"]
    )
    assert code == 0
    line = [x for x in capsys.readouterr().out.splitlines() if x.startswith('{"benchmark"')]
    result = json.loads(line[-1])
    assert result["benchmark"] == "model_size" and result["cpu"]
    (rows,) = result["trials"].values()
    assert [r["config"] for r in rows] == list(model_size.CONFIGS)
    for r in rows:
        assert r["outcome"] in ("measured", "pruned"), r
        if r["outcome"] == "measured":
            assert r["block_size"] >= 1 and r["blocks"] >= 2 and r["budget"] == 0.5
            assert r["timing_phase"] > 0 and r["overrun_blocks"] >= 0
            assert 1 <= r["scored_on"] <= 48 and isinstance(r["timed_first"], bool)
            assert r["scored_on"] == 48 or r["timed_first"]  # stopped only after timing
    (model,) = result["models"].values()
    assert model["trials"] == len(rows) and model["median_trial_seconds"] > 0
