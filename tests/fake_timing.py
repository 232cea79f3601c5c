"""Fake time for timing tests: sessions whose runs advance a fake clock, so what the timing
loops decide (blocks, budgets, estimates, drift cancellation) is checked exactly, never by
how fast this machine is."""

from __future__ import annotations

import math

import numpy as np


class FakeClock:
    """Fake seconds; `drift(now)` is the machine's slowness at that moment (1: none)."""

    def __init__(self, drift=None):
        self.now = 0.0
        self.drift = drift or (lambda _now: 1.0)

    def __call__(self):
        return self.now


class FakeSession:
    """A model whose every run takes `seconds` (plus jitter) of fake time, times the
    clock's drift at that moment raised to `sensitivity` (models that a slow machine slows
    unlike: fp32 more than int8). `log` records the name of every run, in order."""

    def __init__(self, clock, seconds, jitter=0.0, seed=0, sensitivity=1.0, name="", log=None):
        self.clock, self.seconds, self.jitter = clock, seconds, jitter
        self.rng = np.random.default_rng(seed)
        self.sensitivity, self.name, self.log = sensitivity, name, log

    def run(self, _names, _inputs):
        drift = self.clock.drift(self.clock.now) ** self.sensitivity
        self.clock.now += self.seconds * drift * math.exp(self.rng.normal(0, self.jitter))
        if self.log is not None:
            self.log.append(self.name)


class FakeProbe:
    def __init__(self, loads):
        self.loads = iter(loads)

    def start(self):
        pass

    def stop(self):
        return next(self.loads, 0.0)
