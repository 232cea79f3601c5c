"""Optuna's samplers as strategies (tpe, random, nsga2), and grid over the enumerated space.

Optuna's own GridSampler needs a fixed parameter set, but the space is conditional
(calibration exists only in static mode), so grid enumerates the space's distinct valid
configs and proposes those not yet in the study, in order.
"""

from __future__ import annotations

import optuna

from search.errors import QsearchError
from search.space import SearchSpace
from search.space_walk import all_configs
from search.strategies.base import SAMPLE, Proposal, Strategy, records
from search.strategies.beam import BeamSearch

SAMPLERS = ("tpe", "random", "grid", "nsga2")


class SamplerStrategy(Strategy):
    def __init__(self, name: str, seed: int | None = 0) -> None:
        self.name = name
        self.seed = seed

    def sampler(self) -> optuna.samplers.BaseSampler:
        if self.name == "tpe":
            # multivariate + group model the conditional space jointly (Optuna's recommendation).
            return optuna.samplers.TPESampler(
                seed=self.seed,
                multivariate=True,
                group=True,
                n_startup_trials=8,
                constant_liar=True,
            )
        if self.name == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=self.seed, population_size=12)
        return optuna.samplers.RandomSampler(seed=self.seed)

    def propose(self, study: optuna.Study, space: SearchSpace) -> str:
        return SAMPLE


class GridStrategy(Strategy):
    name = "grid"

    def __init__(self, chunk: int = 8) -> None:
        self.chunk = chunk

    def propose(self, study: optuna.Study, space: SearchSpace) -> list[Proposal]:
        done = {r.key for r in records(study)}
        out = []
        for config in all_configs(space):
            if config.key not in done:
                out.append(Proposal(config, {"strategy": "grid"}))
                if len(out) == self.chunk:
                    break
        return out


def make_strategy(
    beam: int | None,
    sampler: str | None,
    seed: int = 0,
    max_drop: float = 0.01,
    fallback: bool = False,
    defer_moves: bool = True,
    settle_ties: bool = True,
) -> Strategy:
    if beam is not None and sampler is not None:
        raise QsearchError("use either --beam K or --sampler NAME, not both")
    if fallback:
        if beam is not None or sampler is not None:
            raise QsearchError("use either --fallback, --beam K or --sampler NAME, not two")
        from search.strategies.fallback import FallbackStrategy

        return FallbackStrategy(max_drop=max_drop)
    if sampler is None:
        width = 4 if beam is None else beam
        if width < 1:
            raise QsearchError(f"--beam must be a width of at least 1, but got {width}")
        return BeamSearch(
            width=width, max_drop=max_drop, defer_moves=defer_moves, settle_ties=settle_ties
        )
    if sampler not in SAMPLERS:
        raise QsearchError(f"--sampler must be one of {', '.join(SAMPLERS)}, but got {sampler!r}")
    if sampler == "grid":
        return GridStrategy()
    return SamplerStrategy(sampler, seed=seed)
