"""A deterministic stand-in for the Evaluator, for strategy and runner tests.

Strategy logic (ranking, expansion, de-duplication, resume) is independent of how a trial is
measured; a synthetic landscape makes its behaviour checkable exactly and instantly.
"""

from __future__ import annotations

from search.config import QuantConfig
from search.errors import TrialError
from search.objective import TrialResult

FP32 = 0.80


def landscape(config: QuantConfig) -> tuple[float, float]:
    """Accuracy and speedup of a config: more quantized operators are faster; static with Add
    collapses; per-channel costs speed and buys accuracy; a disabled fusion helps dynamic."""
    speed = 1.0 + 0.4 * len(config.operators) + (0.2 if "MatMul" in config.operators else 0)
    accuracy = FP32 - 0.002 * len(config.operators)
    if config.per_channel:
        speed -= 0.1
        accuracy += 0.001
    if config.mode == "static":
        speed += 0.15
        accuracy -= 0.004
        if "Add" in config.operators:
            accuracy = 0.5
    if config.disabled_fusions and config.mode == "dynamic":
        speed += 0.3
    if config.reduce_range:
        accuracy -= 0.02
    return accuracy, speed


class FakeEvaluator:
    def __init__(self, fail_when=None) -> None:
        self.calls: list[str] = []
        self.fail_when = fail_when
        self.fp32_accuracy = FP32

    def evaluate(self, config: QuantConfig, context=None) -> TrialResult:
        self.calls.append(config.key)
        if self.fail_when and self.fail_when(config):
            raise TrialError("onnxruntime refused the model (synthetic)")
        accuracy, speed = landscape(config)
        return TrialResult(
            accuracy,
            speed,
            {
                "config": config.to_dict(),
                "config_key": config.key,
                "description": config.describe(),
                "accuracy_fp32": FP32,
            },
        )
