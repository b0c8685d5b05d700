"""Live preview of :class:`~napari_sam._qt.widget.SamWidget`: decode the prompts of the
displayed slice on a worker and show the masks, then commit them to the output layer or
clear them.

Requests are numbered (``_generation``); a decode of a request older than ``_valid_from``
(set by commit, clear and propagation) or not newer than the one shown (``_applied``) is
dropped, and commit refuses while a newer decode (``_requested``) is on its way.
"""

from __future__ import annotations

from napari.utils.notifications import show_error, show_info, show_warning

from napari_sam._qt.workers import DecodeJob, DecodeResult


class LivePreview:
    """Mixin of :class:`~napari_sam._qt.widget.SamWidget`: the preview, commit and clear,
    through the widget's ``controller`` and ``decoder`` (a
    :class:`~napari_sam._qt.workers.LiveDecoder`)."""

    # ------------------------------------------------------------------ live preview

    def request_preview(self) -> None:
        """Decode the prompts of the displayed slice (on a worker) and show the result;
        embeds the slice first when it is not cached."""
        self._generation += 1
        c = self.controller
        if c.image is None or not c.layers_present():
            return
        try:
            index = c.slice_index()
            prompts = c.prompts(index, self.refine_spin.value())
        except ValueError as exc:
            show_warning(str(exc))
            return
        if not prompts:
            self._valid_from = self._generation
            self.decoder.drop_pending()
            c.show_preview((), None)
            return
        key = self._cache_key()
        stack = self.embeddings.current(key)
        predictor = self.models.cached()
        if stack is None or predictor is None or not self.embeddings.done(key, index):
            self._embed([index], decode_after=True)
            return
        self._requested = self._generation
        flat = stack.source.slice_index(index) if index else 0
        self.decoder.submit(
            DecodeJob(self._generation, predictor, stack, tuple(prompts), index, flat,
                      self.zoom_combo.currentText(), self.multimask_combo.currentText())
        )

    def _on_decoded(self, result: DecodeResult) -> None:
        job = result.job
        if result.notice:
            show_warning(f"Segmentation: {result.notice}")
        if job.generation < self._valid_from or job.generation <= self._applied:
            return
        self._applied = job.generation
        self.controller.show_preview(result.masks, job.index)
        self.preview_updated.emit()

    def _on_decode_failed(self, failure) -> None:
        job, exc = failure
        if job.generation >= self._valid_from:
            show_error(f"Segmentation failed: {exc}")

    # ------------------------------------------------------------------ commit / clear

    def commit(self) -> list[int]:
        """Write the preview into the output layer (one undo step) and clear the prompts.
        Returns the label ids written."""
        if self._valid_from <= self._requested and self._requested > self._applied:
            # a newer decode is on its way: commit what the prompts say, not a stale mask
            show_warning("The preview is still updating; commit again in a moment.")
            return []
        refine, chosen = self.refine_spin.value(), self.label_spin.value()
        joins = not refine and chosen and self.controller.has_label(chosen)
        try:
            ids = self.controller.commit(refine or chosen, replace=bool(refine))
        except ValueError as exc:
            show_error(str(exc))
            return []
        if not ids:
            show_warning("Nothing to commit: add a point or a box first.")
            return []
        if joins:
            show_info(f"Label {chosen} already existed: the new pixels were added to it and "
                      "its other pixels kept (to redraw an object, refine it).")  # fmt: skip
        self._valid_from = self._generation = self._generation + 1
        self.label_spin.setValue(0)
        self.refine_spin.setValue(0)
        self._update_status()
        return ids

    def clear(self) -> None:
        """Remove all prompts and empty the preview."""
        self._valid_from = self._generation = self._generation + 1
        self.decoder.drop_pending()
        self.controller.clear_prompts()
