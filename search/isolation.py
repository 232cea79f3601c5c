"""Trials in a child process: a crash inside onnxruntime kills a trial, not the search.

A segfault, an abort or the kernel's out-of-memory killer inside a quantized session would
take the whole search down with it if trials ran in the searching process. `IsolatedEvaluator`
keeps one warm child (spawned, so no threads or sessions are inherited) holding the
`Evaluator` (fp32 session, tokenized batches, calibration ranges), sends it each call, and
waits with a time limit. When the child dies or overruns, the call raises `TrialError` with
the cause, the child is replaced for the next trial, and the runner records a FAIL.

The child also dies with its parent (PR_SET_PDEATHSIG), so a killed search leaves no
orphan timing on the machine. It is started with the path of its spec, pickled to a file,
not the spec itself: multiprocessing's spawn writes a process's pickled arguments into a pipe
whose read end the parent still holds until the write ends, so a child that died before
reading a task's megabytes would leave the parent blocked in that write forever.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import multiprocessing
import pickle
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search.early import PruneSettings
from search.errors import TrialError
from search.measure import TimingSettings
from search.retime import ROUNDS_DIR
from search.tasks.base import TextClassificationTask

# Per-call limit when none is given: far above a normal trial (tens of seconds).
DEFAULT_TIME_LIMIT = 900.0


@dataclass(frozen=True)
class EvaluatorSpec:
    """What the child needs to build its Evaluator: plain data, so it pickles."""

    task: TextClassificationTask
    timing: TimingSettings
    workdir: Path
    prune: PruneSettings | None = None

    def build(self):
        from search.objective import Evaluator

        return Evaluator(self.task, self.timing, self.workdir, self.prune)


def _die_with_parent() -> None:
    with contextlib.suppress(OSError):  # not Linux: the child still exits when the pipe closes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _serve(conn, spec_path: Path) -> None:
    """The child's loop: one call at a time until the parent closes the pipe."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    import onnxruntime

    from search.quantize import quiet_libraries

    quiet_libraries()
    onnxruntime.set_default_logger_severity(3)
    spec: EvaluatorSpec = pickle.loads(Path(spec_path).read_bytes())
    evaluator = spec.build()
    while True:
        try:
            method, args, kwargs = conn.recv()
        except (EOFError, OSError):
            return
        try:
            value = getattr(evaluator, method)
            result = value(*args, **kwargs) if callable(value) else value
            reply = ("ok", result)
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the parent
            reply = ("raise", exc)
        try:
            conn.send(reply)
        except Exception as exc:  # noqa: BLE001 - an unpicklable exception or result
            conn.send(("raise", TrialError(f"{type(exc).__name__}: {exc}")))


def describe_exit(code: int | None) -> str:
    """Why a child stopped, in words a user can act on."""
    if code is None:
        return "still running"
    if code < 0:
        name = signal.Signals(-code).name
        hint = {
            "SIGSEGV": "a crash inside onnxruntime",
            "SIGABRT": "onnxruntime aborted",
            "SIGKILL": "killed, most often by the out-of-memory killer",
            "SIGBUS": "a crash inside onnxruntime",
        }.get(name, "killed by a signal")
        return f"{name} ({hint})"
    return f"exit code {code}"


class IsolatedEvaluator:
    """The Evaluator's interface (`evaluate`, `rescore`, `retime`, `retime_round`, `fp32_accuracy`,
    `close`), each call run in the warm child under `time_limit` seconds; `renew` starts the
    next call in a new child."""

    def __init__(
        self,
        task: TextClassificationTask,
        timing: TimingSettings | None = None,
        time_limit: float | None = DEFAULT_TIME_LIMIT,
        spec_type: type[EvaluatorSpec] = EvaluatorSpec,
        prune: PruneSettings | None = None,
    ) -> None:
        self.task = task
        self.timing = timing or TimingSettings()
        self.time_limit = time_limit
        self.workdir = Path(tempfile.mkdtemp(prefix="qsearch-"))
        self._spec_path = self.workdir / "evaluator-spec.pickle"  # see the module docstring
        self._spec_path.write_bytes(pickle.dumps(spec_type(task, self.timing, self.workdir, prune)))
        self._context = multiprocessing.get_context("spawn")
        self._process = None
        self._conn = None
        self._fp32_accuracy: float | None = None
        self.starts = 0  # children started: more than one means trials crashed or overran
        self._owns_workdir = True

    def _start(self) -> None:
        self.starts += 1
        parent, child = self._context.Pipe()
        self._process = self._context.Process(
            target=_serve, args=(child, self._spec_path), daemon=True, name="qsearch-trial"
        )
        self._process.start()
        child.close()
        self._conn = parent

    def _stop(self) -> None:
        if self._process is not None:
            if self._process.is_alive():
                self._process.kill()
            self._process.join(timeout=10)
        if self._conn is not None:
            self._conn.close()
        self._process = self._conn = None

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Run `method` on the child's Evaluator; its exceptions are raised here."""
        if self._process is None or not self._process.is_alive():
            self._stop()
            self._start()
        try:
            self._conn.send((method, args, kwargs))
        except OSError as exc:  # the child died before reading it: the wait below says why
            if self._process.is_alive():
                raise TrialError(f"could not reach the trial's process: {exc}") from exc
        deadline = None if self.time_limit is None else time.monotonic() + self.time_limit
        while not self._conn.poll(0.2):
            if not self._process.is_alive():
                self._process.join(timeout=1)
                # the reply may have arrived just before the child exited
                if self._conn.poll(0):
                    break
                cause = describe_exit(self._process.exitcode)
                self._stop()
                raise TrialError(f"the trial's process died: {cause}")
            if deadline is not None and time.monotonic() > deadline:
                self._stop()
                raise TrialError(
                    f"the trial ran past its time limit of {self.time_limit:g} s and was stopped"
                )
        try:
            status, value = self._conn.recv()
        except (EOFError, OSError) as exc:  # the child closed the pipe as it died
            self._process.join(timeout=10)
            cause = describe_exit(self._process.exitcode)
            self._stop()
            raise TrialError(f"the trial's process died: {cause}") from exc
        if status == "raise":
            raise value
        return value

    @property
    def fp32_accuracy(self) -> float:
        if self._fp32_accuracy is None:
            self._fp32_accuracy = self.call("fp32_accuracy")
        return self._fp32_accuracy

    def evaluate(self, config, *args: Any, **kwargs: Any):
        return self.call("evaluate", config, *args, **kwargs)

    def rescore(self, config):
        return self.call("rescore", config)

    def retime(self, config, seconds: float | None = None):
        return self.call("retime", config, seconds=seconds)

    def retime_round(self, configs, seconds: float | None = None, **options):
        return self.call("retime_round", configs, seconds=seconds, **options)

    def renew(self) -> None:
        """Let the next call run in a new child, as a fresh `qsearch measure` process would:
        the confirmation times each round in one (`search.confirm`), since a child that has
        quantized, scored and timed a search's trials times int8 slower than a new one (on
        a 2-core Intel Xeon after 40 trials: speedups 0.970x [0.956, 0.985] of a new
        child's in the same minutes, `benchmarks/confirm_process.py`). The working folder,
        with the rounds' quantized files (`search.retime`), stays."""
        self._stop()

    def end_rounds(self) -> None:
        if self._process is not None and self._process.is_alive():
            self.call("end_rounds")
        shutil.rmtree(self.workdir / ROUNDS_DIR, ignore_errors=True)  # whichever child wrote it

    def sibling(self) -> IsolatedEvaluator:
        """Another child of the same evaluator: the same spec and working folder (so the
        confirmation rounds' quantized files and where each config's next pair starts are
        shared, `search.retime`), its own process. Closing it leaves the folder to this one."""
        other = copy.copy(self)
        other._process = other._conn = None
        other.starts = 0
        other._owns_workdir = False
        return other

    def close(self) -> None:
        self._stop()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
