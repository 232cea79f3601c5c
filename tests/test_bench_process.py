"""benchmarks/confirm_process.py's code path, scaled down to the tiny task: an aged child
against fresh children, round by round (numbers are not checked: speed belongs to the
benchmark, these machines are noisy)."""

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from search.measure import TimingSettings, steady_allocator
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
    assert set(line["children_after_rounds"]) == set(bench.ARMS)
    assert set(line["speedup_cv_across_rounds"]) == set(bench.ARMS)
    assert isinstance(line["steady_allocator"], bool)


def test_the_aged_child_runs_a_static_trial_even_in_a_short_run():
    bench = load("confirm_process")
    assert any(c.mode == "static" for c in bench.aging_configs()[:2])


GLIBC = platform.libc_ver()[0] == "glibc"

# A fresh interpreter (this one's heap has a past): four large blocks, each freed before the
# next. glibc's dynamic threshold would serve all but the first from the heap, wherever the
# last one's free left room; fixed, each is a mapping of its own.
ALLOCATIONS = """
import ctypes, sys
from search.measure import steady_allocator
if sys.argv[1] == "fixed":
    assert steady_allocator()
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena ordblks smblks hblks hblkhd usmblks "
                                               "fsmblks uordblks fordblks keepcost").split()]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = (ctypes.c_void_p,)
mapped = []
for size in (4 << 20, 4 << 20, 1 << 20, 2 << 20):
    before = libc.mallinfo2().hblks
    block = libc.malloc(size)
    mapped.append(libc.mallinfo2().hblks - before)
    libc.free(block)
print(mapped)
"""


def test_a_timing_process_maps_large_buffers_whatever_it_freed_before():
    """issue 14: where a session's buffers land must not depend on the process's past, or a
    long-lived trial process reads other speeds than a fresh one (`steady_allocator`)."""
    if not GLIBC:
        assert steady_allocator() is False
        pytest.skip("glibc's allocator only")
    root = Path(__file__).resolve().parent.parent

    def mapped(mode: str) -> list[int]:
        run = [sys.executable, "-c", ALLOCATIONS, mode]
        env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
        out = subprocess.run(run, cwd=root, env=env, capture_output=True, text=True, check=True)
        return json.loads(out.stdout)

    assert mapped("fixed") == [1, 1, 1, 1]
    assert mapped("dynamic")[1:] == [0, 0, 0]  # what the fix is for: glibc's own behaviour


def test_every_evaluator_fixes_the_allocator_in_the_search_child_too(tiny_task):
    from search.isolation import IsolatedEvaluator
    from search.objective import Evaluator

    expected = GLIBC
    evaluator = Evaluator(tiny_task)
    try:
        assert evaluator.steady_allocator is expected
    finally:
        evaluator.close()
    isolated = IsolatedEvaluator(tiny_task)
    try:
        assert isolated.call("steady_allocator") is expected
    finally:
        isolated.close()
