"""benchmarks/quantize_cost.py on the tiny BERT: quantization before and after the
shape-inferred copy and per-channel reuse, side by side, writing the same bytes."""

import json

import search.channel_weights as channel_weights
from benchmarks.quantize_cost import CONFIGS, main, measure


def test_before_and_after_write_the_same_bytes(tiny_task):
    channel_weights.clear()
    rows = measure(tiny_task.model_path, 1, CONFIGS)
    assert [r["config"] for r in rows] == list(CONFIGS)
    for r in rows:
        assert r["same_bytes"], r
        assert r["before_s"] > 0 and r["after_s"] > 0
    assert channel_weights.stats["reused"] > 0  # the timed round reused the warm-up's weights


def test_the_command_prints_a_table_and_a_json_line(tiny_task, capsys):
    assert main(["--model", str(tiny_task.model_path), "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "same bytes" in out
    line = json.loads(out.strip().splitlines()[-1])
    assert line["benchmark"] == "quantize_cost" and len(line["rows"]) == len(CONFIGS)
    assert main(["--model", str(tiny_task.model_path.parent / "missing.onnx")]) == 2
