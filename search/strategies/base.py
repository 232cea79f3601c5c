"""The strategy interface and the view of a study that strategies read.

A strategy holds no state of its own: everything it needs (the beam, the round, what was
already tried) is read back from the study's trials, so re-running a command resumes it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from search.config import QuantConfig
from search.space import SearchSpace
from search.trial_kind import ANSWERS, TrialKind, trial_kind

# Returned by `Strategy.propose` when Optuna's sampler should choose the next config.
SAMPLE = "sample"
FINISHED = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)


@dataclass(frozen=True)
class Proposal:
    """A config to evaluate next, with attributes to record on its trial."""

    config: QuantConfig
    attrs: dict[str, Any]


@dataclass(frozen=True)
class Record:
    """A finished trial as strategies see it."""

    number: int
    key: str
    state: TrialState
    values: tuple[float, float] | None
    attrs: dict[str, Any]
    kind: TrialKind

    @property
    def answers(self) -> bool:
        """Whether this trial settles its config (see `search.trial_kind`)."""
        return self.kind in ANSWERS


def records(study: optuna.Study, states=FINISHED) -> list[Record]:
    """Finished trials with a config, interrupted ones left out."""
    out = []
    for t in study.get_trials(deepcopy=False, states=states):
        key = t.user_attrs.get("config_key")
        kind = trial_kind(t)
        if key is None or kind == TrialKind.INTERRUPTED:
            continue
        values = tuple(t.values) if t.state == TrialState.COMPLETE and t.values else None
        out.append(Record(t.number, key, t.state, values, dict(t.user_attrs), kind))
    return out


class Strategy(ABC):
    """Proposes what to evaluate next from the trials already in the study."""

    name: str = "strategy"
    # Whether a worker with nothing free to evaluate waits for the trials under way elsewhere
    # (a beam round must be finished before the next is known) or is done.
    waits_for_others: bool = True

    def sampler(self) -> optuna.samplers.BaseSampler | None:
        """The Optuna sampler the study is created with (None: Optuna's default)."""
        return None

    def bind(self, space: SearchSpace, structure) -> SearchSpace:
        """The space this strategy searches, once bound to the model's `structure` (a
        `search.structure.Structure`): the space itself unless a strategy adds dimensions."""
        return space

    def prepare(self, study: optuna.Study, space: SearchSpace, task) -> None:
        """Work done once before the trials, from the task (e.g. the fallback's
        sensitivity); nothing by default."""
        return None

    @abstractmethod
    def propose(self, study: optuna.Study, space: SearchSpace) -> list[Proposal] | str:
        """Configs to evaluate next, `SAMPLE` to let the sampler choose, or [] when done."""
