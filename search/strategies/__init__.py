"""Search strategies: what to evaluate next, derived from the study alone."""

from search.strategies.base import SAMPLE, Strategy
from search.strategies.beam import BeamSearch
from search.strategies.samplers import GridStrategy, SamplerStrategy, make_strategy

__all__ = ["SAMPLE", "BeamSearch", "GridStrategy", "SamplerStrategy", "Strategy", "make_strategy"]
