"""Measuring configs again after their trial: `qsearch measure` and the confirmation's
rounds re-time them, and the completion of a partly scored config re-scores it.

Kept apart from the trial itself (`search.objective`): a trial quantizes, scores and times
once; re-timing quantizes again (the same bytes) and times again, on the evaluator's own
fp32 session, so its blocks pool with the trial's (`search.pooled`); re-scoring quantizes
again and scores every example (`search.completion`). A mixin of `Evaluator`, whose `_open`,
`_quantize`, `_speedup`, `baseline`, `timing_batches`, `timing`, `workdir`, `_rounds`,
`_round_batch`, `_baseline_warm`, `scorer` and `scoring_threads` it
uses.

A confirmation runs in a new process (`IsolatedEvaluator.renew`), and a child that died is
started again, so a round may run in another process than the one before: what a round
leaves for the next (each config's quantized file, and where its next pair starts in
the timing batches) is also written under the evaluator's working folder (`ROUNDS_DIR`),
which every process of one evaluator shares: a new process times the same file from where the
last round stopped, without quantizing again.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from search.config import QuantConfig
from search.errors import TrialError
from search.interleave import interleaved_speedups
from search.measure import Speedup
from search.model_files import file_sha256
from search.pair_graph import rank_edges, solved_speeds

ROUNDS_DIR = "rounds"  # under the evaluator's workdir: <config key>/ (the file), <key>.json


class Retiming:
    def retime(self, config: QuantConfig, seconds: float | None = None) -> Speedup:
        """A fresh, independent speed measurement of `config` (confirmation, `measure`),
        with a longer timing budget when `seconds` is given."""
        timing = self.timing if seconds is None else replace(self.timing, seconds=seconds)
        out = Path(tempfile.mkdtemp(prefix="retime-", dir=self.workdir))
        try:
            session = self._open(config, self._quantize(config, out, {}))
            return self._speedup(session, timing)
        finally:
            shutil.rmtree(out, ignore_errors=True)

    def rescore(self, config: QuantConfig) -> dict:
        """`config`'s metric on every example, unpruned: a trial whose scoring stopped early,
        completed because it may be on the frontier (`search.completion`). Quantizing again
        writes the trial's bytes (`graph_sha256` says so)."""
        out = Path(tempfile.mkdtemp(prefix="rescore-", dir=self.workdir))
        try:
            path = self._quantize(config, out, {})
            session = self._open(config, path, self.scoring_threads)
            return {**self.scorer.whole(session), "graph_sha256": file_sha256(path)}
        finally:
            shutil.rmtree(out, ignore_errors=True)

    def retime_round(
        self,
        configs: list[QuantConfig],
        seconds: float | None = None,
        fresh_sessions: bool = False,
        span: int = 0,
        rotate: int = 0,
    ) -> list[Speedup | str]:
        """One round of a round-robin confirmation (`search.confirm`): every config timed
        against fp32 in one run, taking turns a block at a time (`search.interleave`), for `seconds`
        per config. Sessions stay open for the next round (`end_rounds` closes them), so
        rounds time the same sessions, minutes apart, and each config's pairs go on through
        the timing batches from where its last round stopped: a round of a few seconds
        times a few batches, and six rounds that each began at the first batch would never
        time the others. A config that fails answers its error's message, and the others
        are still timed. `fresh_sessions`: each round opens new sessions of the same
        quantized files, so an offset that a session keeps for its life (where its buffers
        landed) is drawn again each round and averages out over the rounds, instead of
        riding on every round of the confirmation (`benchmarks/confirmation.py` measures
        both). `span`: each config is also timed directly against the next `span` configs
        (given fastest first), and its speedup solved from all the round's pairs
        (`search.pair_graph`; `pairs` then counts fp32 pairs of the same precision).
        `rotate`: the turns start that many places along, so no config always goes first."""
        per_config = self.timing.seconds if seconds is None else seconds
        timing = replace(self.timing, seconds=per_config * max(1, len(configs)))
        out: list[Speedup | str] = []
        sessions: dict[int, object] = {}
        for i, config in enumerate(configs):
            try:
                sessions[i] = self._round_session(config, fresh_sessions)
                out.append("")
            except TrialError as exc:
                out.append(str(exc))
        if not sessions:
            return out
        opened = list(sessions)  # node k + 1 is configs[opened[k]]
        keys = [configs[i].key for i in opened]
        nodes = [None, *sessions.values()]  # node 0: the baseline
        edges = rank_edges(len(opened), span)
        turns = edges[rotate % len(edges) :] + edges[: rotate % len(edges)]
        speeds = interleaved_speedups(
            self.baseline,
            [nodes[b] for _, b in turns],
            self.timing_batches,
            timing,
            baseline_warm=self._baseline_warm,
            # a config's edges time the same batches, from where its last round stopped
            first_batch=[self._round_batch[keys[b - 1]] for _, b in turns],
            references=[nodes[a] for a, _ in turns],
        )
        self._baseline_warm = True
        measured = dict(zip(turns, speeds, strict=True))
        for k, key in enumerate(keys):
            timed = [s for (_, b), s in measured.items() if b == k + 1 and not isinstance(s, str)]
            if timed:
                self._round_batch[key] += max(s.pairs for s in timed)
                self._save_round(key)
        for i, speed in zip(opened, solved_speeds(len(opened), measured), strict=True):
            out[i] = speed
        return out

    def _round_session(self, config: QuantConfig, fresh: bool = False):
        key = config.key
        # the last round of this config, by this process or another of this evaluator (an
        # earlier one, or a sibling taking turns): its file, and where its next pair starts
        saved = self._saved_round(key)
        own = self._round_batch.get(key, 0)
        self._round_batch[key] = own if saved is None else int(saved["next_batch"])
        if key not in self._rounds:
            out = self.workdir / ROUNDS_DIR / key
            if saved is None:
                out.mkdir(parents=True, exist_ok=True)
                try:
                    path = self._quantize(config, out, {})
                except TrialError:
                    shutil.rmtree(out, ignore_errors=True)
                    raise
            else:
                path = Path(saved["model"])
            self._rounds[key] = (self._open(config, path), out, path)
            self._save_round(key)
        elif fresh:
            _, out, path = self._rounds[key]
            self._rounds[key] = (None, out, path)  # the old session goes first
            self._rounds[key] = (self._open(config, path), out, path)
        return self._rounds[key][0]

    def _saved_round(self, key: str) -> dict | None:
        state = self.workdir / ROUNDS_DIR / f"{key}.json"
        try:
            saved = json.loads(state.read_text())
        except (OSError, ValueError):
            return None
        return saved if Path(saved.get("model", "")).is_file() else None

    def _save_round(self, key: str) -> None:
        state = {"model": str(self._rounds[key][2]), "next_batch": self._round_batch[key]}
        (self.workdir / ROUNDS_DIR / f"{key}.json").write_text(json.dumps(state))

    def end_rounds(self) -> None:
        """Close the confirmation rounds' sessions and remove their models: the next pass
        quantizes afresh and starts at the first batch."""
        self._rounds.clear()
        self._round_batch.clear()
        shutil.rmtree(self.workdir / ROUNDS_DIR, ignore_errors=True)
