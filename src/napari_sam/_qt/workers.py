"""Work off the GUI thread: embedding slices (with progress, cancellable) and decoding
prompts with only the latest request kept (:class:`LiveDecoder`)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from napari.qt.threading import FunctionWorker, GeneratorWorker, create_worker
from qtpy.QtCore import QObject, Signal

from napari_sam.predictor import ImageEmbedding, MaskPrediction, Predictor
from napari_sam.prompts import Prompt


class Cancelled(Exception):
    """Raised inside the image encoder when the user cancelled the embedding."""


@dataclass(frozen=True)
class Progress:
    """``done`` of ``total`` steps; ``text`` says what is being done."""

    done: int
    total: int
    text: str


@dataclass(frozen=True)
class Embedded:
    """Slice ``index`` (leading data indices) has been embedded under cache ``key``."""

    key: tuple
    index: tuple[int, ...]
    embedding: ImageEmbedding


@contextlib.contextmanager
def _abort_on(model, cancel: threading.Event):
    """Check ``cancel`` before every module of the image encoder runs: a cancelled
    embedding stops within one block instead of running to the end."""

    def check(_module, _inputs):
        if cancel.is_set():
            raise Cancelled

    encoder = getattr(model, "image_encoder", None)
    handles = [m.register_forward_pre_hook(check) for m in encoder.modules()] if encoder else []
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def embed_slices(
    get_predictor: Callable[[], Predictor],
    data,
    indices: Sequence[tuple[int, ...]],
    key: tuple,
    cancel: threading.Event,
    *,
    rgb: bool,
    contrast_limits: tuple[float, float],
) -> Iterator[Progress | Embedded]:
    """Load the model, then embed ``data[index]`` for each index in order, yielding
    :class:`Progress` before each step and :class:`Embedded` after each slice. ``data``:
    the layer's (..., H, W[, 3]) array (numpy, dask, zarr); read slice by slice here."""
    total = len(indices) + 1
    yield Progress(0, total, "loading the model")
    predictor = get_predictor()
    for n, index in enumerate(indices, start=1):
        where = f" slice {', '.join(map(str, index))}" if index else ""
        yield Progress(n, total, f"embedding{where}")
        plane = np.asarray(data[tuple(index)])
        try:
            with _abort_on(predictor.model, cancel):
                embedding = predictor.embed(plane, rgb=rgb, contrast_limits=contrast_limits)
        except Cancelled:
            return
        yield Embedded(key, tuple(index), embedding)
    yield Progress(total, total, "done")


def start_embedding(*args, **kwargs) -> GeneratorWorker:
    """A not-yet-started worker running :func:`embed_slices`."""
    return create_worker(embed_slices, *args, _start_thread=False, _ignore_errors=True, **kwargs)


@dataclass(frozen=True)
class DecodeJob:
    """Decode ``prompts`` on ``embedding`` for slice ``index``; ``generation`` orders jobs."""

    generation: int
    predictor: Predictor
    embedding: ImageEmbedding
    prompts: tuple[Prompt, ...]
    index: tuple[int, ...]


@dataclass(frozen=True)
class DecodeResult:
    job: DecodeJob
    prediction: MaskPrediction


def _decode(job: DecodeJob) -> DecodeResult:
    return DecodeResult(job, job.predictor.predict(job.embedding, list(job.prompts)))


class LiveDecoder(QObject):
    """Runs one decode at a time on a worker thread; while one runs, only the most recent
    request waits (bursts of prompt edits coalesce: intermediate ones are skipped)."""

    decoded = Signal(object)  # DecodeResult, on the GUI thread
    failed = Signal(object)  # (DecodeJob, Exception)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._pending: DecodeJob | None = None
        self._running: FunctionWorker | None = None

    @property
    def busy(self) -> bool:
        return self._running is not None or self._pending is not None

    def submit(self, job: DecodeJob) -> None:
        self._pending = job
        if self._running is None:
            self._next()

    def drop_pending(self) -> None:
        self._pending = None

    def _next(self) -> None:
        job, self._pending = self._pending, None
        if job is None:
            self._running = None
            return
        worker = create_worker(_decode, job, _start_thread=False, _ignore_errors=True)
        worker.returned.connect(self.decoded.emit)
        worker.errored.connect(lambda exc, job=job: self.failed.emit((job, exc)))
        worker.finished.connect(self._next)
        self._running = worker
        worker.start()
