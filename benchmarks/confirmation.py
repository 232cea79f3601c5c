"""The confirmation itself, measured: R independent confirmations of the same 4 configs of
the default task, several ways, with the same timing per config each way:

- sequential: each config re-timed for --seconds, one after another (the first
  end-of-search confirmation, `Evaluator.retime`);
- slots: --rounds rounds, each timing every config against fp32 for --seconds/--rounds, one
  config after another (the round-robin confirmation before block-by-block interleaving);
- round_robin: --rounds rounds, each timing all configs against fp32 in one run, taking
  turns a block (3 pairs) at a time (`Evaluator.retime_round`, `search.interleave`: what
  `search.confirm` does), the rounds timing the same sessions;
- round_robin_fresh: the same, with new sessions of the same files each round
  (`fresh_sessions`), so an offset a session keeps for its life averages over the rounds;
- round_robin_child: the same in a child process (`search.isolation.IsolatedEvaluator`),
  a new one each repeat kept through its rounds (`search.confirm.FRESH_PROCESS`): what
  `qsearch run`'s confirmation did before direct pairs;
- round_robin_process: the same in a new child each round;
- round_robin_children: the same in two children of one evaluator, new each repeat,
  taking turns a round each (`TakingTurns`): if what persists through a repeat's rounds
  were an offset of the process, pooling two would average it (`process_sd` measures it
  from the two children's rounds of the same minutes);
- round_robin_direct: round_robin_child with each config also timed directly against the
  others in the same rounds (`search.pair_graph`, `search.confirm.DIRECT_SPAN`: every two
  of four), its speedup solved from all the round's pairs: what `qsearch run` does now.

Why: sequential re-timing lets the machine's drift between minutes decide the order of the
configs (five sequential 36 s confirmations once all read ~6% low); rounds make the drift
of minutes hit all alike, and interleaving within a round that of seconds. Printed per
method: the CV across repeats of each config's speedup, and for every pair of configs the
CV of their ratio and in how many repeats their order was the order of their medians; in
how many repeats the order of all four was; how often the intervals (rounds: pooled over
the rounds with the drift floor, `search.pooled.pool`; sequential: each run's own) cover
the median of all the repeats of that method. One JSON line at the end. The methods rotate
which goes first from one repeat to the next. For the round methods, each config's spread
is split into what varies between rounds and what persists through one repeat's rounds
(`persistent_sd`: the SD of a repeat's mean beyond what its rounds' spread explains).

    .venv/bin/python benchmarks/confirmation.py --repeats 10 --seconds 36 --rounds 6
    .venv/bin/python benchmarks/confirmation.py --seconds 72 --methods sequential,round_robin
    .venv/bin/python benchmarks/confirmation.py --methods round_robin,round_robin_fresh --save out
    .venv/bin/python benchmarks/confirmation.py --summarize out   # the saved run, summarized again
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from search.config import QuantConfig  # noqa: E402
from search.confirm import DIRECT_SPAN, confirmation_round  # noqa: E402
from search.drift import floor_from, stretch_of  # noqa: E402
from search.measure import TimingSettings  # noqa: E402
from search.pooled import block, pool  # noqa: E402
from search.quantize import quiet_libraries  # noqa: E402
from search.worker import describe_worker, worker_info  # noqa: E402

FUSION_OFF = ("SkipLayerNormFusion",)
TARGET_CV = 0.01  # issue 14: the ratio between two configs at a CV of at most 1%
METHODS = (
    "sequential",
    "slots",
    "round_robin",
    "round_robin_fresh",
    "round_robin_child",
    "round_robin_process",
    "round_robin_children",
    "round_robin_direct",
)
IN_CHILD = (
    "round_robin_child",
    "round_robin_process",
    "round_robin_children",
    "round_robin_direct",
)
ALTERNATING = ("round_robin_children",)  # two children taking turns a round each
RENEW = {
    "round_robin_child": "repeat",
    "round_robin_process": "round",
    "round_robin_children": "repeat",
    "round_robin_direct": "repeat",
}
DIRECT = ("round_robin_direct",)  # the others time each config against fp32 alone


def candidates() -> dict[str, QuantConfig]:
    """Four dynamic configs of the default task's frontier region, 2-15% apart (all MatMuls
    ~2.68x, one layer's attention output fp32, its FFN-up fp32 ~2.44x, the whole layer fp32
    ~2.07x on an AMD EPYC Zen 4). Configs closer than the timing can tell apart (per-channel
    against per-tensor weights, 0.1% apart) are a tie the search reports as one, and no
    method holds their order: they measure nothing about the confirmation."""
    base = QuantConfig(
        operators=("MatMul",), per_channel=True, disabled_fusions=FUSION_OFF, matmul_scope="weights"
    )
    return {
        "all MatMuls": base.replace(matmul_scope="all"),
        "layer0.attn_out fp32": base.replace(fp32_groups=("layer0.attn_out",)),
        "layer0.ffn_up fp32": base.replace(fp32_groups=("layer0.ffn_up",)),
        "layer0 fp32": base.replace(fp32_groups=("layer0",)),
    }


def sequential(evaluator, configs: list[QuantConfig], seconds: float) -> list[dict]:
    """Each config timed once for `seconds`, one after another: its speedup and interval."""
    out = []
    for config in configs:
        s = evaluator.retime(config, seconds=seconds)
        out.append({"speedup": s.ratio, "low": s.low, "high": s.high})
    return out


def round_robin(
    evaluator,
    configs: list[QuantConfig],
    seconds: float,
    rounds: int,
    slots: bool = False,
    fresh: bool = False,
    renew: str | None = None,
    span: int = 0,
) -> list[dict]:
    """`rounds` rounds, each timing every config for seconds/rounds (starting one further
    along each round): all at once, interleaved, or (`slots`) one after another, on the same
    sessions or (`fresh`) new ones each round, in a new child (`renew`) for the repeat or
    each round where the evaluator has one, each config also timed directly against the
    next `span` (`search.pair_graph`); each config's rounds pooled
    (`search.pooled.pool`), with each round's own speedup."""
    blocks: list[list[dict]] = [[] for _ in configs]
    try:
        for r in range(rounds):
            if renew == "round" or (renew == "repeat" and r == 0):
                evaluator.renew()
            order = [(r + i) % len(configs) for i in range(len(configs))]
            slot = seconds / rounds
            if slots:
                speeds = {i: evaluator.retime_round([configs[i]], seconds=slot)[0] for i in order}
            else:
                speeds = dict(
                    enumerate(confirmation_round(evaluator, configs, r, slot, fresh, span))
                )
            for i, s in speeds.items():
                if isinstance(s, str):
                    raise RuntimeError(f"{configs[i].describe()} failed: {s}")
                blocks[i].append(block(s, "round"))
    finally:
        evaluator.end_rounds()
    return [
        {
            **pool(b).to_dict(),
            "rounds": [x["speedup"] for x in b],
            "round_pairs": [x["pairs"] for x in b],
        }
        for b in blocks
    ]


class TakingTurns:
    """An `IsolatedEvaluator` and its `sibling`, taking turns a round each (`retime_round`),
    both new at `renew`; they share the rounds' files and batch positions (`search.retime`)."""

    def __init__(self, evaluator) -> None:
        self.children = [evaluator, evaluator.sibling()]
        self._turn = 0

    def retime_round(self, configs, seconds=None, **options):
        child = self.children[self._turn % 2]
        self._turn += 1
        return child.retime_round(configs, seconds=seconds, **options)

    def renew(self) -> None:
        self._turn = 0
        for child in self.children:
            child.renew()

    def end_rounds(self) -> None:
        for child in self.children:
            child.end_rounds()

    def close(self) -> None:
        for child in reversed(self.children):  # the sibling first: the folder is the first's
            child.close()


def _starts(child) -> int:
    return sum(c.starts for c in getattr(child, "children", [child]))


def process_sd(repeats: list[list[dict]], j: int) -> float:
    """For rounds that alternate between two processes (even rounds in one, odd in the
    other): the SD of the offset a process keeps for its life, from the difference between
    the two processes' mean log speedups in the same repeat beyond what their rounds'
    spread explains (E[d^2] = 2 p^2 + the two means' variances)."""
    diffs, within = [], []
    for rep in repeats:
        logs = np.log(rep[j]["rounds"])
        a, b = logs[0::2], logs[1::2]
        if len(a) < 2 or len(b) < 2:
            continue
        diffs.append(np.mean(a) - np.mean(b))
        within.append(np.var(a, ddof=1) / len(a) + np.var(b, ddof=1) / len(b))
    if not diffs:
        return 0.0
    return float(np.sqrt(max(0.0, (np.mean(np.square(diffs)) - np.mean(within)) / 2)))


def pairs_for(repeats: list[list[dict]], target: float = TARGET_CV) -> dict | None:
    """What a ratio CV of `target` between the two noisiest configs would take on this machine,
    from the spread of the rounds: a round of p pairs reads a config's log speedup with an
    SD of sigma / sqrt(p), so sigma (one pair's SD, per config) is the rounds' spread scaled
    by their pairs; a ratio of two configs from n pairs each spreads sqrt((s_i^2 + s_j^2) / n).
    What persists through a repeat's rounds is left out, so this is the least it takes: the
    answer to "would longer confirmations meet 1% here?". None for runs saved without the
    rounds' pairs. For round_robin_direct, whose rounds' `pairs` count pairs against fp32 of
    the same precision, this is what fp32 pairs alone would take: its ratios come mostly from
    the direct pairs, whose precision per second is higher (`search.pair_graph`)."""
    if not all("round_pairs" in c and len(c["rounds"]) > 1 for rep in repeats for c in rep):
        return None
    sigma = []
    for j in range(len(repeats[0])):
        per_repeat = [
            np.var(np.log(rep[j]["rounds"]), ddof=1) * np.mean(rep[j]["round_pairs"])
            for rep in repeats
        ]
        sigma.append(float(np.sqrt(np.mean(per_repeat))))
    worst = sorted(sigma)[-2:]
    needed = int(math.ceil(sum(x * x for x in worst) / target**2))
    pairs = float(np.mean([sum(c["round_pairs"]) for rep in repeats for c in rep]))
    return {
        "pair_sd": [round(x, 5) for x in sigma],
        "pairs_per_config": round(pairs, 1),
        "pairs_needed": needed,
        "times_the_timing": round(needed / pairs, 2),
    }


def _cv(values) -> float:
    values = np.asarray(values, dtype=float)
    return float(np.std(values, ddof=1) / np.mean(values)) if len(values) > 1 else 0.0


def summarize(names: list[str], repeats: list[list[dict]], alternating: bool = False) -> dict:
    """CVs, order stability and interval coverage of one method's repeats; `alternating`:
    its rounds took turns between two processes, so `process_sd` means something."""
    speeds = np.asarray([[c["speedup"] for c in rep] for rep in repeats])  # repeats x configs
    medians = np.median(speeds, axis=0)
    median_order = list(np.argsort(-medians))
    same = sum(list(np.argsort(-row)) == median_order for row in speeds)
    covered = [c["low"] <= medians[j] <= c["high"] for rep in repeats for j, c in enumerate(rep)]
    pairs = {}
    for i, j in itertools.combinations(range(len(names)), 2):
        ratios = speeds[:, i] / speeds[:, j]
        faster = medians[i] >= medians[j]
        pairs[f"{names[i]} / {names[j]}"] = {
            "median_ratio": float(np.median(ratios)),
            "cv": _cv(ratios),
            "same_order": int(sum((r >= 1) == faster for r in ratios)),
        }
    persistent = {}
    if all("rounds" in c for rep in repeats for c in rep) and len(repeats) > 1:
        for j, n in enumerate(names):
            logs = [np.log(rep[j]["rounds"]) for rep in repeats]
            within = float(np.mean([np.var(x, ddof=1) / len(x) for x in logs if len(x) > 1]))
            between = float(np.var([np.mean(x) for x in logs], ddof=1))
            persistent[n] = float(np.sqrt(max(0.0, between - within)))
    held_out = held_out_floors(repeats, medians) if persistent else {}
    per_process = {}
    if alternating and persistent:
        per_process = {n: process_sd(repeats, j) for j, n in enumerate(names)}
    return {
        "persistent_sd": persistent,
        "process_sd": per_process,
        "speedup_cv": {n: _cv(speeds[:, j]) for j, n in enumerate(names)},
        "median_speedup": {n: float(medians[j]) for j, n in enumerate(names)},
        "pairs": pairs,
        "worst_pair_cv": max((p["cv"] for p in pairs.values()), default=0.0),
        "same_order": int(same),
        "repeats": len(repeats),
        "order": [names[j] for j in median_order],
        "coverage": float(np.mean(covered)),
        "for_target": pairs_for(repeats),
        **held_out,
    }


def held_out_floors(repeats: list[list[dict]], medians) -> dict:
    """The coverage the pooled intervals get with the drift floor a study reads from the
    machine (`search.drift.floor_from`), each repeat's floor read from the other repeats (the
    stretches that timed the same configs at other minutes, as a study's trials and
    confirmation passes are), so no repeat's floor has seen its own offset."""
    floors, covered = [], []
    for r, rep in enumerate(repeats):
        others = [
            [stretch_of(np.log(q[j]["rounds"])) for k, q in enumerate(repeats) if k != r]
            for j in range(len(rep))
        ]
        floor = floor_from(others).floor
        floors.append(floor)
        for j, c in enumerate(rep):
            p = pool([{"speedup": x, "pairs": 1} for x in c["rounds"]], floor)
            covered.append(p.low <= medians[j] <= p.high)
    return {
        "study_floors": [round(f, 4) for f in floors],
        "coverage_study_floor": float(np.mean(covered)),
    }


def run_benchmark(
    task,
    repeats: int,
    seconds: float,
    rounds: int,
    progress=print,
    timing=None,
    methods: tuple[str, ...] = METHODS,
) -> dict:
    """R repeats of each of `methods` on `task` (see the docstring); the summary and raw
    runs. Fewer methods make a long run (the 1% target needs a minute per config) fit."""
    from search.isolation import IsolatedEvaluator
    from search.objective import Evaluator

    configs = candidates()
    names, values = list(configs), list(configs.values())
    timing = timing or TimingSettings()
    evaluator = Evaluator(task, timing)
    # a child for each method that runs in one: renewed each repeat, or each round
    children = {m: IsolatedEvaluator(task, timing) for m in IN_CHILD if m in methods}
    for method in ALTERNATING:
        if method in children:
            children[method] = TakingTurns(children[method])
    runs: dict[str, list[list[dict]]] = {m: [] for m in methods}
    try:
        for r in range(repeats):
            for method in methods[r % len(methods) :] + methods[: r % len(methods)]:
                if method == "sequential":
                    result = sequential(evaluator, values, seconds)
                else:
                    result = round_robin(
                        children.get(method, evaluator),
                        values,
                        seconds,
                        rounds,
                        slots=method == "slots",
                        fresh=method in ("round_robin_fresh", *IN_CHILD),
                        renew=RENEW.get(method),
                        span=DIRECT_SPAN if method in DIRECT else 0,
                    )
                runs[method].append(result)
                speeds = ", ".join(f"{c['speedup']:.3f}" for c in result)
                progress(f"repeat {r + 1}/{repeats} {method}: {speeds}")
    finally:
        evaluator.close()
        for child in children.values():
            child.close()
    return {
        "cpu": describe_worker(worker_info()),
        "children": {m: _starts(child) for m, child in children.items()},  # processes started
        "configs": {n: c.describe() for n, c in configs.items()},
        "seconds_per_config": seconds,
        "rounds": rounds,
        "methods": list(methods),
        **{m: summarize(names, runs[m], m in ALTERNATING) for m in methods},
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=36.0, help="timing per config")
    parser.add_argument("--rounds", type=int, default=6, help="round-robin rounds")
    parser.add_argument(
        "--methods",
        default=",".join(METHODS),
        help=f"comma-separated, of {', '.join(METHODS)} (default: all)",
    )
    parser.add_argument(
        "--save", type=Path, help="also write the whole result, every repeat's rounds, as JSON"
    )
    parser.add_argument(
        "--summarize",
        type=Path,
        help="summarize a run saved with --save again (with this version's figures); time nothing",
    )
    args = parser.parse_args()
    if args.summarize:
        saved = json.loads(args.summarize.read_text())
        names = list(saved["configs"])
        for m in saved["methods"]:
            saved[m] = summarize(names, saved["runs"][m], m in ALTERNATING)
        print_result(saved)
        return
    methods = tuple(m for m in args.methods.split(",") if m)
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        parser.error(f"--methods must name methods of {', '.join(METHODS)}, not {args.methods!r}")
    quiet_libraries()
    from search.tasks.default import default_task

    result = run_benchmark(
        default_task(),
        args.repeats,
        args.seconds,
        args.rounds,
        lambda m: print(m, file=sys.stderr),
        methods=methods,
    )
    if args.save:
        args.save.write_text(json.dumps(result, indent=1))
    print_result(result)


def print_result(result: dict) -> None:
    """The table, then the JSON line (without the raw runs)."""
    methods = result.get("methods", METHODS)
    s0 = result[methods[0]]
    print(
        f"CPU: {result['cpu']}; {s0['repeats']} repeats, {result['seconds_per_config']:g} s "
        f"per config ({result['rounds']} rounds round-robin)"
    )
    for method in methods:
        s = result[method]
        print(
            f"\n{method}: same order in {s['same_order']}/{s['repeats']} repeats (issue 14: at "
            f"least 9 of 10); interval coverage {100 * s['coverage']:.0f}% (at least 90%)"
            + (
                f", {100 * s['coverage_study_floor']:.0f}% with the floor read from the other "
                f"repeats ({100 * min(s['study_floors']):.1f}-{100 * max(s['study_floors']):.1f}%)"
                if "coverage_study_floor" in s
                else ""
            )
            + "; "
            f"worst CV of a ratio between two configs {100 * s['worst_pair_cv']:.2f}% (at most 1%)"
        )
        for name, cv in s["speedup_cv"].items():
            kept = s.get("persistent_sd", {}).get(name)
            persists = "" if kept is None else f"  persistent per repeat {100 * kept:.2f}%"
            if name in s.get("process_sd", {}):
                persists += f", per process {100 * s['process_sd'][name]:.2f}%"
            print(
                f"  {name:<42} median {s['median_speedup'][name]:.3f}x  CV {100 * cv:.2f}%"
                + persists
            )
        for pair, p in s["pairs"].items():
            print(
                f"  {pair:<80} ratio {p['median_ratio']:.4f}  CV {100 * p['cv']:.2f}%  "
                f"same order {p['same_order']}/{s['repeats']}"
            )
        need = s.get("for_target")
        if need:
            seconds = result["seconds_per_config"] * need["times_the_timing"]
            print(
                f"  a pair's SD {', '.join(f'{100 * x:.1f}%' for x in need['pair_sd'])}: a ratio "
                f"at CV {100 * TARGET_CV:g}% takes at least {need['pairs_needed']} pairs of each "
                f"config, {need['times_the_timing']:.1f}x the {need['pairs_per_config']:.0f} "
                f"timed here (~{seconds:.0f} s per config)"
            )
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}))


if __name__ == "__main__":
    main()
