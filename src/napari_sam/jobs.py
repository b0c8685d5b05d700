"""Background jobs without Qt: a cancel token per job, the points where heavy work checks it,
and the scheduler that decides which jobs may run side by side.

A job runs on its own thread inside :func:`cancellable` with its own :class:`CancelToken`;
the image encoder calls :func:`checkpoint` before each block, which raises
:class:`Cancelled` only when *that thread's* token is set (loops such as propagation's
slices also check their token between steps). Cancelling one job
therefore never stops another, even when both share one model: nothing is hooked onto the
model itself.

:class:`Scheduler` keeps the running jobs by kind. Jobs that use the image encoder and write
embeddings (``embed``, ``propagate``, ``auto``) run one at a time; any other kind runs beside
them (the widget's preview decodes do not go through it at all). Finding similar objects
and adapting the model are exclusive too: they are heavy on a CPU.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

#: kinds that may not run at the same time as each other (they encode and write embeddings)
EXCLUSIVE = frozenset({"embed", "propagate", "auto", "refine", "similar", "adapt"})
#: what the user reads when a job must wait for another of these kinds
DOING = {"embed": "an embedding", "propagate": "segmenting through the stack",
         "auto": "an automatic segmentation", "refine": "refining labels",
         "similar": "finding similar objects", "adapt": "adapting the model"}  # fmt: skip


class Cancelled(Exception):
    """Raised at a :func:`checkpoint` of a job whose token was cancelled."""


class CancelToken:
    """One job's cancel flag (thread safe)."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled


_current = threading.local()


@contextlib.contextmanager
def cancellable(token: CancelToken) -> Iterator[CancelToken]:
    """Make ``token`` the one :func:`checkpoint` checks on this thread, for the block."""
    before = getattr(_current, "token", None)
    _current.token = token
    try:
        yield token
    finally:
        _current.token = before


def checkpoint() -> None:
    """Raise :class:`Cancelled` when the job running on this thread was cancelled (no-op
    outside :func:`cancellable`: scripts and the CLI)."""
    token = getattr(_current, "token", None)
    if token is not None and token.cancelled:
        raise Cancelled


def drain(steps: Generator[tuple[int, int], None, T],
          progress: Callable[[int, int], Any] | None = None) -> T:  # fmt: skip
    """Run a progress generator (yielding ``(done, total)``) to its end and return its
    value; ``progress(done, total)`` sees every step. The heavy work of the package is such
    generators, so that a GUI runs them step by step and a script drains them."""
    while True:
        try:
            done, total = next(steps)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(done, total)


def shifted(steps: Generator[tuple[int, int], None, T], start: int,
            total: int) -> Generator[tuple[int, int], None, T]:  # fmt: skip
    """A progress generator's steps as ``(start + done, total)``, and its value: a part of a
    longer job (``yield from shifted(...)``)."""
    while True:
        try:
            done, _ = next(steps)
        except StopIteration as stop:
            return stop.value
        yield start + done, total


class Busy(Exception):
    """A job cannot start now: another job it may not overlap is running (the message says
    which)."""


@dataclass(eq=False)
class Job:
    """A running job: its ``kind`` (``embed``, ``propagate``, ``auto``, ``decode``) and its
    own cancel ``token``."""

    kind: str
    token: CancelToken = field(default_factory=CancelToken)

    def cancel(self) -> None:
        self.token.cancel()

    @property
    def cancelled(self) -> bool:
        return self.token.cancelled


class Scheduler:
    """The jobs running now, and which may start: at most one of :data:`EXCLUSIVE` kinds at a
    time; anything else overlaps freely. Thread safe; jobs are started on the GUI thread and
    finished from their finished signal."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: list[Job] = []
        self._listeners: list[Callable[[Job], None]] = []

    def on_finish(self, callback: Callable[[Job], None]) -> None:
        """Call ``callback(job)`` after each job finishes (on the thread that finishes it),
        e.g. to start what waited for it."""
        self._listeners.append(callback)

    def _refuse(self, kind: str) -> None:
        if kind in EXCLUSIVE:
            for other in self._running:
                if other.kind in EXCLUSIVE:
                    raise Busy(f"{DOING[other.kind].capitalize()} is running: wait for it "
                               f"or cancel it first.")  # fmt: skip

    def check(self, kind: str) -> None:
        """Raise :class:`Busy` when a job of ``kind`` could not start now (nothing starts)."""
        with self._lock:
            self._refuse(kind)

    def blocking(self, kind: str) -> Job | None:
        """The running job that keeps one of ``kind`` from starting, or None."""
        with self._lock:
            if kind in EXCLUSIVE:
                return next((j for j in self._running if j.kind in EXCLUSIVE), None)
            return None

    def start(self, kind: str) -> Job:
        """A new job of ``kind``, counted as running until :meth:`finish`. Raises
        :class:`Busy` when a job it may not overlap runs."""
        with self._lock:
            self._refuse(kind)
            job = Job(kind)
            self._running.append(job)
            return job

    def finish(self, job: Job) -> None:
        """``job`` has ended (completed, failed or cancelled)."""
        with self._lock:
            if job not in self._running:
                return
            self._running.remove(job)
        for callback in list(self._listeners):
            callback(job)

    def running(self, kind: str | None = None) -> list[Job]:
        """The running jobs (of ``kind`` only, when given)."""
        with self._lock:
            return [j for j in self._running if kind is None or j.kind == kind]
