"""The project's errors: one family, so the CLI has one boundary that turns them into messages.

A `QsearchError` is the user's to fix (bad space file, missing model, ...): the CLI prints its
message and exits with `exit_code` (2), never a traceback. A `TrialError` is a configuration that
failed inside the quantizer or onnxruntime: it is recorded as a FAIL trial and the search goes on.
"""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """A library error in one line: its first line, or its type when it has no message."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def failure_reason(exc: BaseException) -> str:
    """A failed trial's recorded reason: the library's exception type and its first line
    (onnxruntime's messages run to pages; the first line names the node and the cause)."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first[:500]}"


class QsearchError(Exception):
    """An error the user can fix; its message says what is wrong and what would be right."""

    exit_code = 2


class SpaceError(QsearchError):
    """A search space file or value that cannot be searched."""


class ConfigError(QsearchError):
    """A quantization configuration with an invalid or impossible combination of values."""


class TaskError(QsearchError):
    """A model, data set or task setting that cannot be used."""


class StorageError(QsearchError):
    """A storage URL or study that cannot be opened or does not match the search asked for."""


class TrialError(Exception):
    """One trial failed (quantization, session creation, NaN outputs); the search goes on."""


class TrialOutcome(Exception):
    """A trial that ended early with an answer, not a failure: the runner records it.

    Raised by `Evaluator.evaluate` so its return type stays one plain result. Every argument
    is plain data passed on to `Exception`, so an outcome pickles across processes; `attrs`
    are the trial's user attributes measured so far (config, graph hash, phase seconds).
    """


class SameGraph(TrialOutcome):
    """The config quantized to a graph (with session options) already evaluated as trial
    `number`: the trial copies that result instead of measuring it again."""

    def __init__(self, number: int, attrs: dict) -> None:
        super().__init__(number, attrs)
        self.number = number
        self.attrs = attrs

    def __str__(self) -> str:
        return f"same quantized graph as trial {self.number}"


class TrialPruned(TrialOutcome):
    """The metric, on the examples seen so far, cannot reach the pruning threshold: the
    trial stops before timing and is recorded as PRUNED with `evidence` (plain numbers)."""

    def __init__(self, reason: str, evidence: dict, attrs: dict) -> None:
        super().__init__(reason, evidence, attrs)
        self.reason = reason
        self.evidence = evidence
        self.attrs = attrs

    def __str__(self) -> str:
        return self.reason


class Terminated(BaseException):
    """SIGTERM arrived: unwind at once (the trial under way is marked interrupted), exit 143.

    A BaseException, like KeyboardInterrupt, so no `except Exception` swallows it."""
