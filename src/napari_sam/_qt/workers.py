"""Work off the GUI thread: embedding slices (with progress, cancellable), decoding
prompts with only the latest request kept (:class:`LiveDecoder`), and propagating an
object through a stack axis (:func:`propagate_object`)."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from napari.qt.threading import FunctionWorker, GeneratorWorker, create_worker
from qtpy.QtCore import QObject, Signal

from napari_sam.jobs import Cancelled, CancelToken, cancellable
from napari_sam.layer_embeddings import LayerEmbeddings, StackRequest
from napari_sam.plane_segmentation import TiledEmbeddings, segment_plane
from napari_sam.predictor import Predictor
from napari_sam.prompts import Prompt
from napari_sam.propagation import Propagation, PropagationConfig, propagate
from napari_sam.stack_embeddings import embed_tile
from napari_sam.transforms import ObjectMask


class WorkFailed(Exception):
    """A ``RuntimeError`` of a worker (torch's, a store's), re-raised as a plain exception:
    superqt takes a ``RuntimeError`` out of a worker for a deleted worker and then emits
    neither ``errored`` nor ``finished``. ``original``: the exception raised."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(str(original))
        self.original = original


def _plain_errors(steps):
    """Run the generator ``steps`` (yields and return value passed on) with its
    ``RuntimeError`` s turned into :class:`WorkFailed`."""
    try:
        return (yield from steps)
    except RuntimeError as exc:
        raise WorkFailed(exc) from exc


@dataclass(frozen=True)
class Progress:
    """``done`` of ``total`` steps; ``text`` says what is being done."""

    done: int
    total: int
    text: str


@dataclass(frozen=True)
class Notice:
    """Something the user should know about the running embedding (shown as a warning)."""

    text: str


@dataclass(frozen=True)
class Embedded:
    """Slice ``index`` (leading data indices) has been embedded (every tile) under ``key``."""

    key: tuple
    index: tuple[int, ...]


def embed_slices(
    get_predictor: Callable[[], Predictor],
    session: LayerEmbeddings,
    request: StackRequest,
    indices: Sequence[tuple[int, ...]],
    token: CancelToken,
) -> Iterator[Progress | Embedded | Notice]:
    """Load the model, open the embeddings (:meth:`LayerEmbeddings.stack_for`), then embed
    every tile of slice ``data[index]`` not yet stored, for each index in order, yielding
    :class:`Progress` before each step and :class:`Embedded` after each slice (after a
    :class:`Notice` when the model had to move to the CPU). Slices are read one window at a
    time from the layer's array (numpy, dask, zarr). Stops within one encoder block when
    ``token`` (this job's own) is cancelled."""
    with cancellable(token):
        try:
            yield from _embed_steps(get_predictor, session, request, indices)
        except Cancelled:
            return


def _embed_steps(get_predictor, session, request, indices):
    total = len(indices) + 1
    yield Progress(0, total, "loading the model")
    predictor = get_predictor()
    stack = session.stack_for(request, predictor)
    for n, index in enumerate(indices, start=1):
        where = f" slice {', '.join(map(str, index))}" if index else ""
        flat = stack.source.slice_index(index) if index else 0
        todo = np.nonzero(~stack.is_done()[flat])[0]
        for k, tile in enumerate(todo):
            part = f" tile {k + 1} / {len(todo)}" if stack.grid.n_tiles > 1 else ""
            yield Progress(n, total, f"embedding{where}{part}")
            note = predictor.fallback_note
            embed_tile(stack.source, stack.grid, stack.embedder, stack.store, flat, int(tile))
            if predictor.fallback_note != note:
                yield Notice(f"Embedding: {predictor.fallback_note}")
        yield Embedded(request.key, tuple(index))
    yield Progress(total, total, "done")


def start_embedding(*args, **kwargs) -> GeneratorWorker:
    """A not-yet-started worker running :func:`embed_slices`."""
    def steps():
        return (yield from _plain_errors(embed_slices(*args, **kwargs)))

    return create_worker(steps, _start_thread=False, _ignore_errors=True)


@dataclass(frozen=True)
class DecodeJob:
    """Decode ``prompts`` (plane (row, col)) on slice ``index`` of ``embeddings``;
    ``generation`` orders jobs; ``zoom``: auto, on or off (:mod:`napari_sam.zoom`);
    ``multimask``: auto, best, single or any (:func:`~napari_sam.predictor.mask_choice`)."""

    generation: int
    predictor: Predictor
    embeddings: TiledEmbeddings
    prompts: tuple[Prompt, ...]
    index: tuple[int, ...]
    slice_index: int  # ``index`` as a flat slice index of ``embeddings``
    zoom: str = "auto"
    multimask: str = "auto"


@dataclass(frozen=True)
class DecodeResult:
    """The objects of ``job.prompts`` (one plane mask each, whole plane) and their predicted
    IoUs (``scores``); ``notice``: why the model moved to the CPU during this decode
    (accelerator out of memory), or None."""

    job: DecodeJob
    masks: tuple[ObjectMask, ...]
    notice: str | None = None
    scores: tuple[float, ...] = ()


def _decode(job: DecodeJob) -> DecodeResult:
    """Each prompt through :func:`~napari_sam.plane_segmentation.segment_plane` (the one 2D / tiled path)."""
    note = job.predictor.fallback_note
    try:
        found = [segment_plane(job.embeddings, job.predictor, job.slice_index, p,
                               zoom=job.zoom, multimask=job.multimask)
                 for p in job.prompts]  # fmt: skip
    except RuntimeError as exc:
        raise WorkFailed(exc) from exc
    moved = job.predictor.fallback_note
    return DecodeResult(job, tuple(f.mask for f in found), moved if moved != note else None,
                        tuple(float(f.score) for f in found))


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


def propagate_object(
    get_predictor: Callable[[], Predictor],
    session: LayerEmbeddings,
    request: StackRequest,
    annotations: dict[int, Prompt],
    slices: Sequence[int],
    config: PropagationConfig,
    token: CancelToken,
) -> Generator[Progress | Notice, None, Propagation | None]:
    """Load the model, open the embeddings, then :func:`napari_sam.propagation.propagate` the
    object (slices not embedded yet are embedded on the way), yielding :class:`Progress`
    per slice. Returns the :class:`~napari_sam.propagation.Propagation`, or None when cancelled
    (``token``, this job's own, is checked before every encoder block and after every
    slice)."""
    with cancellable(token):
        try:
            yield Progress(0, 1, "loading the model")
            predictor = get_predictor()
            stack = session.stack_for(request, predictor)
            steps = propagate(stack, predictor, annotations, slices=slices, config=config)
            note = predictor.fallback_note
            while True:
                try:
                    done, total = next(steps)
                except StopIteration as end:
                    return end.value
                if token.cancelled:
                    steps.close()
                    return None
                if predictor.fallback_note != note:
                    note = predictor.fallback_note
                    yield Notice(f"Segmenting through the stack: {note}")
                yield Progress(done, total, "segmenting slices")
        except Cancelled:
            return None


def start_propagation(*args, **kwargs) -> GeneratorWorker:
    """A not-yet-started worker running :func:`propagate_object`."""
    def steps():
        return (yield from _plain_errors(propagate_object(*args, **kwargs)))

    return create_worker(steps, _start_thread=False, _ignore_errors=True)
