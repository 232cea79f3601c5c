"""Two int8 configs timed against each other directly, beside each against fp32, same minutes.

Why: the confirmation orders its candidates by the ratio of their speedups, each measured in
ABBA pairs against fp32 (`search.interleave`). A ratio read that way carries the noise of
two pairs (fp32/A and fp32/B) and pays for two fp32 runs; on a noisy machine that is what
keeps issue 14's 1% out of reach (`benchmarks/confirmation.py` says how many pairs it would
take). Timing A against B directly (ABBA pairs of the two int8 models) carries one pair's
noise and runs no fp32. This measures whether the direct pairs are as steady as pairs with
fp32 (two int8 models might ride the machine's contention together, or not), how many
seconds each way takes for the same precision of the ratio, and whether the two ways agree
(a model that runs after another model instead of fp32 or itself could read another level).

The three kinds of pairs (fp32/A, fp32/B, A/B) take turns on every batch, the kind that goes
first rotating, each pair's orientation alternating, for `--cycles` passes over the timing
batches. Printed: per kind the SD of a pair's log ratio (per-batch means removed), its
seconds, and the mean of pairs where either model went first; the ratio A/B both ways with
its standard error, their difference with a 95% bound, and how many times fewer seconds the
direct way needs for the same standard error. One JSON line at the end.

    .venv/bin/python benchmarks/direct_pairs.py --cycles 30 --configs 0,1   # ~10 min
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.confirmation import candidates  # noqa: E402
from search.measure import TimingSettings, timed_run  # noqa: E402
from search.quantize import quiet_libraries  # noqa: E402
from search.worker import describe_worker, worker_info  # noqa: E402

KINDS = ("fp32/A", "fp32/B", "A/B")


def time_pairs(baseline, a, b, batches, cycles: int, clock=time.perf_counter) -> dict:
    """The three kinds of pairs taking turns on every batch: per kind, each pair's batch
    index, log(first model's time / second's), whether the first model went first, and the
    kind's seconds in all."""
    models = {"fp32/A": (baseline, a), "fp32/B": (baseline, b), "A/B": (a, b)}
    out = {k: {"batch": [], "log": [], "x_first": [], "seconds": 0.0} for k in KINDS}
    for batch in batches:  # warm all three
        for model in (baseline, a, b):
            timed_run(model, batch, clock)
    for c in range(cycles):
        for i, batch in enumerate(batches):
            for k in range(len(KINDS)):
                kind = KINDS[(k + c + i) % len(KINDS)]
                x, y = models[kind]
                x_first = (c + i + k) % 2 == 0
                began = clock()
                if x_first:
                    tx, ty = timed_run(x, batch, clock), timed_run(y, batch, clock)
                else:
                    ty, tx = timed_run(y, batch, clock), timed_run(x, batch, clock)
                rec = out[kind]
                rec["seconds"] += clock() - began
                rec["batch"].append(i)
                rec["log"].append(math.log(tx / ty))
                rec["x_first"].append(x_first)
    return out


def summarize(pairs: dict) -> dict:
    """Per kind: pairs, mean log ratio, a pair's SD (per-batch means removed), the mean's
    standard error, seconds, the means by which model went first; then the ratio A/B both
    ways (speedup of A over speedup of B), their difference, and the seconds ratio for the
    same standard error."""
    kinds = {}
    for kind, rec in pairs.items():
        logs, batch = np.asarray(rec["log"]), np.asarray(rec["batch"])
        first = np.asarray(rec["x_first"], dtype=bool)
        means = {i: logs[batch == i].mean() for i in set(rec["batch"])}
        resid = logs - np.asarray([means[i] for i in batch])
        sd = float(resid.std(ddof=1)) if len(logs) > 1 else 0.0
        kinds[kind] = {
            "pairs": len(logs),
            "mean_log": float(logs.mean()),
            "pair_sd": sd,
            "se": sd / math.sqrt(len(logs)),
            "seconds": rec["seconds"],
            "first_went_first": float(logs[first].mean()) if first.any() else None,
            "second_went_first": float(logs[~first].mean()) if (~first).any() else None,
        }
    fa, fb, ab = kinds["fp32/A"], kinds["fp32/B"], kinds["A/B"]
    via, via_se = fa["mean_log"] - fb["mean_log"], math.hypot(fa["se"], fb["se"])
    direct, direct_se = -ab["mean_log"], ab["se"]  # log(t_B / t_A): A's speedup over B's
    via_seconds = fa["seconds"] + fb["seconds"]
    saving = None
    if direct_se > 0 and ab["seconds"] > 0:
        saving = (via_se**2 * via_seconds) / (direct_se**2 * ab["seconds"])
    return {
        "kinds": kinds,
        "ratio_via_fp32": math.exp(via),
        "ratio_via_fp32_se": via_se,
        "ratio_direct": math.exp(direct),
        "ratio_direct_se": direct_se,
        "difference": direct - via,
        "difference_bound": 1.96 * math.hypot(via_se, direct_se),
        "direct_needs_one_over": saving,
    }


def run_benchmark(task, cycles: int, picks: tuple[int, int], timing=None) -> dict:
    from search.objective import Evaluator

    configs = candidates()
    names = [list(configs)[i] for i in picks]
    evaluator = Evaluator(task, timing or TimingSettings())
    try:
        sessions = []
        for name in names:
            out = Path(tempfile.mkdtemp(prefix="direct-", dir=evaluator.workdir))
            path = evaluator._quantize(configs[name], out, {})
            sessions.append(evaluator._open(configs[name], path))
        pairs = time_pairs(evaluator.baseline, *sessions, evaluator.timing_batches, cycles)
    finally:
        evaluator.close()
    return {
        "benchmark": "direct_pairs",
        "cpu": describe_worker(worker_info()),
        "A": names[0],
        "B": names[1],
        "cycles": cycles,
        **summarize(pairs),
    }


def print_result(r: dict) -> None:
    print(f"CPU: {r['cpu']}; A = {r['A']}, B = {r['B']}; {r['cycles']} cycles")

    def signed(x: float | None) -> str:
        return "-" if x is None else f"{x:+.4f}"

    for kind, k in r["kinds"].items():
        print(
            f"  {kind:7s} {k['pairs']} pairs, {k['seconds']:.0f} s: a pair's SD "
            f"{100 * k['pair_sd']:.2f}%, mean log ratio {k['mean_log']:+.4f} "
            f"(first model first {signed(k['first_went_first'])}, "
            f"second first {signed(k['second_went_first'])})"
        )
    saving = r["direct_needs_one_over"]
    print(
        f"ratio A/B via fp32 {r['ratio_via_fp32']:.4f} (SE {100 * r['ratio_via_fp32_se']:.2f}%), "
        f"direct {r['ratio_direct']:.4f} (SE {100 * r['ratio_direct_se']:.2f}%); difference "
        f"{100 * r['difference']:+.2f}% +- {100 * r['difference_bound']:.2f}%; for the same SE "
        + ("-" if saving is None else f"the direct pairs need 1/{saving:.1f} of the seconds")
    )
    print(json.dumps(r))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=30, help="passes over the batches")
    parser.add_argument(
        "--configs",
        default="0,1",
        help="two of confirmation.py's four configs, by index (default 0,1: all MatMuls and "
        "layer0.attn_out fp32, ~1%% apart)",
    )
    args = parser.parse_args(argv)
    picks = tuple(int(x) for x in args.configs.split(","))
    if len(picks) != 2 or picks[0] == picks[1] or not all(0 <= p < 4 for p in picks):
        parser.error(f"--configs must name two different indices of 0-3, not {args.configs!r}")
    quiet_libraries()
    from search.tasks.default import default_task

    print_result(run_benchmark(default_task(), args.cycles, picks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
