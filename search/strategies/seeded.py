"""The seed trials: the recipes for the worker's CPU (`search.seeds`), proposed before any
strategy runs, once per study (a config already in the study is not proposed again)."""

from __future__ import annotations

import optuna

from search.config import QuantConfig
from search.space import SearchSpace
from search.strategies.base import Proposal, Strategy, records

SEED = "seed"  # trial attribute: the recipe's name


class SeedStrategy(Strategy):
    name = "seed"
    waits_for_others = False  # a seed under way elsewhere is that worker's; move on

    def __init__(self, seeds: dict[str, QuantConfig]) -> None:
        self.seeds = seeds

    def propose(self, study: optuna.Study, space: SearchSpace) -> list[Proposal]:
        answered = {r.key for r in records(study) if r.answers}  # the runner skips those under way
        return [
            Proposal(config, {SEED: name, "strategy": self.name})
            for name, config in self.seeds.items()
            if config.key not in answered
        ]


def seed_configs(study: optuna.Study) -> list[QuantConfig]:
    """The seeds a study was started from, read back from its trials (so the beam counts
    them as members on any worker, whatever that worker's CPU would have chosen)."""
    return [
        QuantConfig.from_dict(r.attrs["config"])
        for r in records(study)
        if r.attrs.get(SEED) and r.answers and "config" in r.attrs
    ]
