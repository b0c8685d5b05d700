"""Embedding control of :class:`~napari_sam._qt.widget.SamWidget`: which embeddings the
displayed image needs, computing them on a worker (Embed, Cancel, progress), opening a
store made by ``napari-sam embed``, and the status line.
"""

from __future__ import annotations

from pathlib import Path

from napari.utils.notifications import show_error, show_info, show_warning

from napari_sam._qt.model_panel import IN_MEMORY
from napari_sam._qt.workers import Embedded, Notice, Progress, start_embedding
from napari_sam.jobs import Busy
from napari_sam.layer_embeddings import StackRequest, StoreRefused
from napari_sam.napari_layers import spatial_shape


class EmbeddingControl:
    """Mixin of :class:`~napari_sam._qt.widget.SamWidget`: runs embeddings into the widget's
    ``embeddings`` (an :class:`~napari_sam.layer_embeddings.LayerEmbeddings`) with its
    ``models``, drives the Embed / Cancel buttons, the progress bar and the status line."""

    # ------------------------------------------------------------------ embedding

    def _cache_key(self) -> tuple:
        """Identifies the embeddings the displayed image needs: image, data, model, and
        either the store the user opened for it or the contrast limits and cache folder."""
        image = self.controller.image
        base = (id(image), id(image.data), self.models.wanted)
        if self._store is not None and self._store[0] is image:
            return (*base, "store", str(self._store[1]))
        limits = tuple(float(x) for x in image.contrast_limits)
        return (*base, limits, str(self._folder) if self._folder else None)

    def _request(self) -> StackRequest:
        """What to open for the current image (GUI thread)."""
        image = self.controller.image
        store = self._store[1] if self._store is not None and self._store[0] is image else None
        return StackRequest(
            key=self._cache_key(), data=image.data[0] if image.multiscale else image.data,
            rgb=bool(image.rgb), contrast_limits=tuple(float(x) for x in image.contrast_limits),
            name=image.name, folder=self._folder, store=store,
        )  # fmt: skip

    # ------------------------------------------------------------------ opened stores

    def open_embeddings(self, path: str | Path) -> None:
        """Use the embedding store at ``path`` (made by ``napari-sam embed``) for the chosen
        image. Checked on a worker: a store made for other data, model or tiling is refused
        with an error notification and nothing changes."""
        image = self._check_image()
        if image is None:
            return
        if self._embed_worker is not None:
            show_warning("An embedding is running: cancel it or wait, then open the store.")
            return
        self._store_before = self._store
        self._store = (image, Path(path))
        self._opening_store = True
        self._embed([], decode_after=False)

    def _opened_store(self) -> None:
        image = self.controller.image
        stack = self.embeddings.current(self._cache_key()) if image is not None else None
        if stack is None:
            return
        done = len(self.embeddings.indices(self._cache_key()))
        show_info(f"Opened the embeddings {stack.store.path}: {done} of "
                  f"{stack.source.n_slices} slice(s) stored.")  # fmt: skip

    def embed_all(self) -> None:
        """Embed the displayed slice, then (for a stack) every other slice not cached."""
        image = self._check_image()
        if image is None:
            return
        try:
            index = self.controller.slice_index()
        except ValueError as exc:
            show_error(str(exc))
            return
        shape = spatial_shape(image)
        lead = shape[:-2]
        import numpy as np

        key = self._cache_key()
        done = set(self.embeddings.indices(key))
        order = [index] + [tuple(int(i) for i in ix) for ix in np.ndindex(*lead) if ix != index]
        todo = [ix for ix in order if ix not in done]
        if not todo:
            show_info("Already embedded.")
            return
        self._embed(todo, decode_after=False)

    def _embed(self, indices, decode_after: bool) -> None:
        if decode_after:
            self._after_embed = True
        if self._embed_worker is not None:
            return
        try:
            job = self.jobs.start("embed")
        except Busy as exc:
            self._after_embed = False
            if decode_after:  # a prompt: decoded when the other job ends (it may embed it)
                self._preview_waits = True
                self._last_embed_note = f"preview waits: {exc}"
                self._update_status()
            else:
                show_warning(str(exc))
            return
        self._embed_job = job
        worker = start_embedding(
            self.models.predictor, self.embeddings, self._request(), list(indices), job.token
        )
        worker.yielded.connect(self._on_embed_step)
        worker.errored.connect(self._on_embed_error)
        worker.finished.connect(self._on_embed_finished)
        self._embed_worker = worker
        self.embed_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setRange(0, len(indices) + 1)
        self.progress.setValue(0)
        self.progress.setVisible(True)
        self._last_embed_note = ""
        worker.start()

    def cancel_embedding(self) -> None:
        """Stop the running embedding (within one encoder block); embedded slices stay."""
        if self._embed_worker is None:
            return
        self._after_embed = False
        self._embed_job.cancel()
        self._embed_worker.quit()
        self._last_embed_note = "embedding cancelled"

    def _on_embed_step(self, item) -> None:
        if isinstance(item, Progress):
            self.progress.setValue(item.done)
            self.progress.setFormat(f"{item.text} (%v / %m)")
        elif isinstance(item, Embedded):
            self._update_status()
        elif isinstance(item, Notice):
            self._last_embed_note = "model moved to the CPU (accelerator out of memory)"
            show_warning(item.text)

    def _on_embed_error(self, exc: Exception) -> None:
        self._after_embed = False
        exc = getattr(exc, "original", exc)  # WorkFailed: the error raised in the worker
        if isinstance(exc, StoreRefused) and self._opening_store:
            self._opening_store = False
            self._store = self._store_before  # as before: nothing changed
            show_error(f"Embeddings not opened: {exc}")
            return
        if isinstance(exc, StoreRefused):  # the opened store does not fit the new model
            self._store = None
            self._update_status()
            show_error(f"The opened embeddings no longer fit: {exc}. Embeddings are now "
                       "computed as for any image.")  # fmt: skip
            return
        self._last_embed_note = "embedding failed"
        show_error(f"Embedding failed: {exc}")

    def _on_embed_finished(self) -> None:
        if self._opening_store:
            self._opening_store = False
            self._opened_store()
        self._embed_worker = None
        self.jobs.finish(self._embed_job)
        self._embed_job = None
        self.embed_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.progress.setVisible(False)
        self._update_status()
        self.embedding_finished.emit()
        if self._after_embed:
            self._after_embed = False
            self.request_preview()
        self._resume_waiting_preview()

    def _resume_waiting_preview(self) -> None:
        """Decode the prompts that waited while another job held the encoder."""
        if self._preview_waits and not self.jobs.running("embed") and not self.jobs.running(
            "propagate"
        ):
            self._preview_waits = False
            self._last_embed_note = ""
            self.request_preview()

    @property
    def embedding_running(self) -> bool:
        return self._embed_worker is not None

    # ------------------------------------------------------------------ status

    def _update_status(self) -> None:
        from napari_sam.model.download import cache_dir

        wanted = self.models.wanted
        model = "no model" if wanted is None else f"{wanted[0].source or wanted[0].label}"
        if wanted is not None:
            model += f" on {wanted[1]} ({wanted[2]})"
        loaded = " (loaded)" if self.models.cached() is not None else ""
        image = self.controller.image
        if image is None:
            embedded = "no image layer"
        else:
            key = self._cache_key()
            done = self.embeddings.indices(key)
            lead = spatial_shape(image)[:-2]
            if not lead:
                embedded = "image embedded" if done else "image not embedded yet"
            else:
                total = 1
                for n in lead:
                    total *= n
                shown = ", ".join(",".join(map(str, ix)) for ix in done[:8])
                more = " ..." if len(done) > 8 else ""
                embedded = f"{len(done)} / {total} slices embedded" + (
                    f" ({shown}{more})" if done else ""
                )
        note = f" - {self._last_embed_note}" if self._last_embed_note else ""
        if image is not None and self._store is not None and self._store[0] is image:
            where = f"{self._store[1]} (opened)"
        else:
            where = f"store per image in {self._folder}" if self._folder else IN_MEMORY
        self.status.setText(
            f"{embedded}{note}\nmodel: {model}{loaded}\nembeddings: {where}\n"
            f"weights cache: {cache_dir()}"
        )
