"""One background job of a panel: started on the engine's scheduler, run on a napari
``thread_worker`` inside its own cancel token, and handed back however it ends.

``steps`` is a function ``predictor -> generator`` (yielding ``(done, total)``, returning
the result); it runs on the worker after the engine's model is loaded there. Exactly one of
``done(result)``, ``failed(message)`` or ``cancelled()`` is emitted per run, after the job
is handed back to the scheduler.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

from qtpy.QtCore import QObject, Signal

from napari_sam._qt.workers import WorkFailed
from napari_sam.jobs import Busy, Cancelled, Job, cancellable

Steps = Callable[[Any], Generator[tuple[int, int], None, Any]]


class PanelJob(QObject):
    """Runs one kind of job (``kind``: a :class:`~napari_sam.jobs.Scheduler` kind) for a
    panel; at most one at a time, cancelled only by its own :meth:`cancel`."""

    progress = Signal(int, int)
    done = Signal(object)
    failed = Signal(str)
    cancelled = Signal()

    def __init__(self, engine, kind: str, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.engine, self.kind = engine, kind
        self.job: Job | None = None
        self.worker = None
        self._scheduler = None

    @property
    def running(self) -> bool:
        return self.worker is not None

    def start(self, steps: Steps) -> str | None:
        """Start ``steps`` on a worker; returns why it cannot start (another job that may
        not overlap runs), else None."""
        from napari.qt.threading import thread_worker

        if self.running:
            return "it is running already"
        scheduler = getattr(self.engine, "scheduler", None)
        try:
            job = scheduler.start(self.kind) if scheduler is not None else Job(self.kind)
        except Busy as exc:
            return str(exc)
        self.job, self._scheduler = job, scheduler
        engine = self.engine

        @thread_worker
        def work():
            with cancellable(job.token):
                try:
                    return (yield from steps(engine.predictor()))
                except Cancelled:
                    return Cancelled
                except RuntimeError as exc:  # superqt drops RuntimeErrors without a signal
                    raise WorkFailed(exc) from exc

        self.worker = work()
        self.worker.yielded.connect(lambda step: self.progress.emit(*step))
        self.worker.returned.connect(self._on_returned)
        self.worker.errored.connect(self._on_error)
        # a cancel inside the encoder can end the work with no other signal
        self.worker.finished.connect(self._on_finished)
        self.worker.start()
        return None

    def cancel(self) -> None:
        """Stop this job (at its next checkpoint); other jobs go on."""
        if self.job is not None:
            self.job.cancel()
        if self.worker is not None:
            self.worker.quit()

    def _hand_back(self) -> bool:
        """Give the job back; False when that was done already (one signal per run)."""
        if self.worker is None:
            return False
        if self._scheduler is not None and self.job is not None:
            self._scheduler.finish(self.job)
        self.job, self.worker = None, None
        return True

    def _on_returned(self, result) -> None:
        if self._hand_back():
            if result is Cancelled:
                self.cancelled.emit()
            else:
                self.done.emit(result)

    def _on_error(self, exc: BaseException) -> None:
        if self._hand_back():
            self.failed.emit(str(exc))

    def _on_finished(self) -> None:
        if self._hand_back():
            self.cancelled.emit()
