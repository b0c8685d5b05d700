"""Embed a whole stack on dask: local threads by default, a dask.distributed cluster on request.

One task per pending (slice, tile): read its window (dask data: its chunks, inside the graph),
embed, publish into the store. Tasks are independent: each writes its own feature chunk, and
the shared bookkeeping rows are written under the store's lock file
(:mod:`napari_sam.embeddings`); finished pairs are skipped, so a rerun resumes. With a scheduler address
the workers must see the image and the store at the same paths (a shared file system) and be
able to import napari_sam; the embedder is sent to each worker once (``scatter``). The image
goes to the workers pickled: a file opened through :class:`FileArray` pickles as its path and
is reopened there (an open tifffile handle cannot be pickled at all).
"""

from __future__ import annotations

import queue
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask
import numpy as np

from napari_sam.stack_embeddings import StackEmbeddings, embed_tile


class FileArray:
    """One level of an image file (TIFF, zarr, npy; :func:`napari_sam.slice_source.open_image`),
    read lazily, that pickles as ``(path, level)`` and is opened again where it is unpickled:
    what a dask worker needs. ``shape``, ``dtype`` and indexing as the array opened."""

    def __init__(self, path: str | Path, level: int = 0, array: Any = None) -> None:
        self.path, self.level = Path(path), int(level)
        if array is None:
            from napari_sam.slice_source import open_image

            data, multiscale = open_image(self.path)
            if not multiscale and self.level != 0:
                raise ValueError(f"{self.path} has one level, not level {self.level}")
            array = data[self.level] if multiscale else data
        self._array = array
        self.shape, self.dtype = tuple(array.shape), np.dtype(array.dtype)

    @classmethod
    def levels(cls, path: str | Path) -> list[FileArray]:
        """Every level of the file at ``path``, full resolution first (one when it is not
        multiscale); the file is opened once."""
        from napari_sam.slice_source import open_image

        data, multiscale = open_image(path)
        return [cls(path, i, a) for i, a in enumerate(data if multiscale else [data])]

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.asarray(self._array[key])

    def __getstate__(self) -> dict:
        return {"path": self.path, "level": self.level}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], state["level"])

    def __repr__(self) -> str:
        return f"FileArray({str(self.path)!r}, level={self.level}, shape={self.shape})"


def _task(source, grid, embedder, store, slice_index, tile, image, cancelled=None):
    if cancelled is not None and cancelled.is_set():
        return None
    embed_tile(source, grid, embedder, store, slice_index, tile, image)
    return (slice_index, tile)


def _graph(stack: StackEmbeddings, pending, embedder, cancelled):
    # named (dask does not hash the image for keys) and not traversed (a SliceSource holding
    # a dask array must not be computed whole); each goes into the graph once
    run_id = uuid.uuid4().hex

    def const(obj, what):
        return dask.delayed(obj, name=f"napari-sam-{what}-{run_id}", traverse=False)

    source, grid, store = (const(getattr(stack, k), k) for k in ("source", "grid", "store"))
    if embedder is None:  # else a distributed future of the scattered embedder
        embedder = const(stack.embedder, "embedder")
    run = dask.delayed(_task, pure=False)
    return [run(source, grid, embedder, store, s, t,
                stack.source.dask_region(s, stack.grid[t].window), cancelled)
            for s, t in pending]  # fmt: skip


def embed_all(
    stack: StackEmbeddings,
    *,
    scheduler: str | None = None,
    num_workers: int = 1,
    verify: bool = True,
) -> Iterator[tuple[int, int]]:
    """Compute every missing (slice, tile) of ``stack``; yields progress ``(done, total)``.

    ``scheduler``: None for dask's local threads (``num_workers`` of them), or the address of
    a ``dask.distributed`` scheduler (``"tcp://host:8786"``), or ``"local-cluster"`` for a
    throwaway ``LocalCluster`` of ``num_workers`` processes. ``verify`` re-checks stored
    embeddings and recomputes corrupted ones. Closing the generator stops the work (tasks not
    started are skipped); what is published stays published.
    """
    pending = stack.store.pending(verify=verify)
    total = stack.source.n_slices * stack.grid.n_tiles
    done = total - len(pending)
    yield (done, total)
    if not pending:
        return
    if scheduler is None:
        yield from _run_threads(stack, pending, num_workers, done, total)
    else:
        yield from _run_distributed(stack, pending, scheduler, num_workers, done, total)
    stack.store.refresh()  # what the workers' own store handles published
    stack.computed += len(pending)


def _run_threads(stack, pending, num_workers, done, total) -> Iterator[tuple[int, int]]:
    progress: queue.Queue = queue.Queue()
    cancelled = threading.Event()
    tasks = _graph(stack, pending, None, cancelled)
    keys = {t.key for t in tasks}

    def posttask(key, result, dsk, state, worker_id):
        if key in keys:
            progress.put(("one", None))

    def compute() -> None:
        try:
            dask.compute(*tasks, scheduler="threads", num_workers=num_workers,
                         callbacks=[(None, None, None, posttask, None)])  # fmt: skip
            progress.put(("end", None))
        except BaseException as exc:  # re-raised in the consuming thread
            progress.put(("error", exc))

    worker = threading.Thread(target=compute, name="napari-sam-embed", daemon=True)
    worker.start()
    try:
        while True:
            kind, exc = progress.get()
            if kind == "error":
                raise exc
            if kind == "end":
                return
            done += 1
            yield (done, total)
    finally:
        cancelled.set()
        worker.join()


def _run_distributed(stack, pending, scheduler, num_workers, done, total):
    from distributed import Client, LocalCluster, as_completed

    if scheduler == "local-cluster":
        cluster = LocalCluster(n_workers=num_workers, threads_per_worker=1, host="127.0.0.1",
                               dashboard_address=None)  # fmt: skip
        client = Client(cluster)
    else:
        cluster, client = None, Client(scheduler)
    try:
        [embedder] = client.scatter([stack.embedder], broadcast=True)
        try:
            futures = client.compute(_graph(stack, pending, embedder, None))
        except TypeError as exc:  # distributed could not serialise the graph: the image data
            raise ValueError(
                f"the image ({type(stack.source.data).__name__}) cannot be sent to the dask "
                f"workers ({exc.__cause__ or exc}): open the file as "
                "napari_sam.scaleout.FileArray(path), which the workers reopen by path"
            ) from exc
        try:
            for future in as_completed(futures):
                future.result()  # raises the task's error here
                done += 1
                yield (done, total)
        finally:
            client.cancel(futures)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
