"""The "Prompts and objects" section of the Segment Anything widget: negative-point toggle,
output layer, label id, refine, zoom, mask choice, Clear / Commit, and the live preview
behind them (decode the prompts of the displayed slice on a worker, show the masks, commit
them to the output layer or clear them).

:class:`PromptSection` is one part of :class:`~napari_sam._qt.widget.SamWidget`, built from
explicit dependencies: the viewer, the :class:`~napari_sam.layer_binding.LayerBinding`, the
:class:`~napari_sam.model_choice.ModelHolder`, the
:class:`~napari_sam.layer_embeddings.LayerEmbeddings` and the
:class:`~napari_sam._qt.model_section.ModelSection` (which embeds a slice a prompt needs).

Preview requests are numbered (``_generation``); a decode of a request older than
``_valid_from`` (set by commit, clear and :meth:`PromptSection.invalidate`) or not newer
than the one shown (``_applied``) is dropped, and commit refuses while a newer decode
(``_requested``) is on its way.
"""

from __future__ import annotations

from napari.layers import Labels
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
)

from napari_sam._qt.layer_combo import LayerCombo
from napari_sam._qt.model_section import ModelSection
from napari_sam._qt.workers import DecodeJob, DecodeResult, LiveDecoder
from napari_sam.layer_binding import LayerBinding
from napari_sam.layer_embeddings import LayerEmbeddings
from napari_sam.model_choice import ModelHolder


class PromptSection(QGroupBox):
    """The prompt controls and the live preview of ``binding``'s prompt layers."""

    #: emitted after the preview layer shows a new decode (the benchmark and tests wait on it)
    preview_updated = Signal()
    #: emitted after a commit wrote objects into the output layer
    committed = Signal()

    def __init__(
        self,
        viewer,
        binding: LayerBinding,
        models: ModelHolder,
        embeddings: LayerEmbeddings,
        model_section: ModelSection,
    ) -> None:
        super().__init__("Prompts and objects")
        self.binding, self.models, self.embeddings = binding, models, embeddings
        self.model_section = model_section
        self.decoder = LiveDecoder(self)
        self.decoder.decoded.connect(self._on_decoded)
        self.decoder.failed.connect(self._on_decode_failed)
        self._generation = 0  # of the latest preview request
        self._valid_from = 0  # decodes of older requests are dropped (after clear / commit)
        self._applied = -1
        self._requested = -1  # generation of the latest decode submitted
        self.candidate: str | None = None  # a candidate (0-3) chosen with the candidate key
        self._build(viewer)

    # ------------------------------------------------------------------ layout

    def _build(self, viewer) -> None:
        form = QFormLayout(self)
        form.addRow(QLabel("Click: positive point. N or the button: negative points. "
                           "Draw boxes / polygons on the boxes layer (many boxes = many "
                           "objects)."))  # fmt: skip
        form.itemAt(form.rowCount() - 1, QFormLayout.ItemRole.SpanningRole).widget().setWordWrap(
            True
        )
        self.negative_button = QPushButton("Negative points (N)")
        self.negative_button.setCheckable(True)
        self.negative_button.toggled.connect(self.binding.set_negative)
        form.addRow(self.negative_button)
        self.output_combo = LayerCombo(viewer, Labels, accept=self._is_output_candidate)
        self.output_combo.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.output_combo.setMinimumContentsLength(12)
        self.output_combo.setToolTip("Committed objects go into this labels layer")
        self.output_combo.layer_changed.connect(self._on_output)
        form.addRow("output", self.output_combo)
        self.label_spin = QSpinBox()
        self.label_spin.setRange(0, 2**31 - 1)
        self.label_spin.setSpecialValueText("next free")
        self.label_spin.setToolTip("Label id of the next commit (0: the next free id)")
        form.addRow("label id", self.label_spin)
        self.refine_spin = QSpinBox()
        self.refine_spin.setRange(0, 2**31 - 1)
        self.refine_spin.setSpecialValueText("off")
        self.refine_spin.setToolTip("Refine this object of the output layer: its mask is the "
                                    "dense prompt, with the points; commit replaces it")  # fmt: skip
        self.refine_spin.valueChanged.connect(lambda _value: self.request_preview())
        self.pick_button = QPushButton("Use selected label")
        self.pick_button.setToolTip("Refine the label selected in the output layer")
        self.pick_button.clicked.connect(self._pick_refine)
        row = QHBoxLayout()
        row.addWidget(self.refine_spin)
        row.addWidget(self.pick_button)
        form.addRow("refine", row)
        self.zoom_combo = QComboBox()
        self.zoom_combo.addItems(["auto", "on", "off"])
        self.zoom_combo.setToolTip("Zoom in on small objects: decode each object once more on "
                                   "a magnified window around it (one more image embedding "
                                   "per prompt). auto: on for the bundled model, whose "
                                   "encoder is fast")  # fmt: skip
        self.zoom_combo.currentTextChanged.connect(lambda _text: self.request_preview())
        form.addRow("zoom", self.zoom_combo)
        self.multimask_combo = QComboBox()
        self.multimask_combo.addItems(["auto", "best", "single", "any"])
        self.multimask_combo.setToolTip("Which of SAM's masks an object gets. best: the best "
                                        "of its three masks by predicted IoU; single: its "
                                        "single-mask output; any: the best of all four; "
                                        "auto: per kind of prompt, as the model says "
                                        "(docs/prompting.md)")  # fmt: skip
        self.multimask_combo.currentTextChanged.connect(lambda _text: self.request_preview())
        self.candidate_label = QLabel("")
        self.candidate_label.setToolTip("The preview's mask and SAM's predicted IoU for it. "
                                        "M cycles through SAM's four candidates (0: its "
                                        "single-mask output, 1-3: the three ambiguity-aware "
                                        "masks), then back to the choice above")  # fmt: skip
        row = QHBoxLayout()
        row.addWidget(self.multimask_combo)
        row.addWidget(self.candidate_label, 1)
        form.addRow("mask", row)
        self.clear_button = QPushButton("Clear (Shift+C)")
        self.clear_button.clicked.connect(self.clear)
        self.commit_button = QPushButton("Commit (C)")
        self.commit_button.clicked.connect(self.commit)
        row = QHBoxLayout()
        row.addWidget(self.clear_button)
        row.addWidget(self.commit_button)
        form.addRow(row)

    def _is_output_candidate(self, layer) -> bool:
        return layer is not self.binding.preview

    def _on_output(self, layer) -> None:
        if layer is not None:
            self.binding.output = layer

    def _pick_refine(self) -> None:
        output = self.binding.output
        if output is None:
            show_error("Choose an output labels layer to pick an object from.")
            return
        self.refine_spin.setValue(int(output.selected_label))

    # ------------------------------------------------------------------ choices

    @property
    def zoom(self) -> str:
        return self.zoom_combo.currentText()

    @property
    def multimask(self) -> str:
        """The mask choice for the preview: a candidate picked with the candidate key, else
        the *mask* combo's."""
        return self.candidate or self.multimask_combo.currentText()

    def cycle_candidate(self) -> None:
        """Show SAM's next candidate mask (0, 1, 2, 3, then the *mask* choice again) for the
        prompted object, with its predicted IoU; commit takes the one shown."""
        order = (None, "0", "1", "2", "3")
        self.candidate = order[(order.index(self.candidate) + 1) % len(order)]
        self.request_preview()

    def reset_ids(self) -> None:
        """Back to the next free id, no object refined (after objects were written)."""
        self.label_spin.setValue(0)
        self.refine_spin.setValue(0)

    # ------------------------------------------------------------------ live preview

    def request_preview(self) -> None:
        """Decode the prompts of the displayed slice (on a worker) and show the result;
        embeds the slice first when it is not cached."""
        self._generation += 1
        c = self.binding
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
            self.candidate = None
            self.candidate_label.setText("")
            return
        key = self.model_section.cache_key()
        stack = self.embeddings.current(key)
        predictor = self.models.cached()
        if stack is None or predictor is None or not self.embeddings.done(key, index):
            self.model_section.embed([index], then=self.request_preview)
            return
        self._requested = self._generation
        flat = stack.source.slice_index(index) if index else 0
        self.decoder.submit(DecodeJob(self._generation, predictor, stack, tuple(prompts), index,
                                      flat, self.zoom, self.multimask))  # fmt: skip

    def _on_decoded(self, result: DecodeResult) -> None:
        job = result.job
        if result.notice:
            show_warning(f"Segmentation: {result.notice}")
        if job.generation < self._valid_from or job.generation <= self._applied:
            return
        self._applied = job.generation
        self.binding.show_preview(result.masks, job.index)
        self._show_scores(job.multimask, result.scores)
        self.preview_updated.emit()

    def _show_scores(self, mode: str, scores: tuple[float, ...]) -> None:
        which = f"candidate {mode}" if mode in ("0", "1", "2", "3") else mode
        shown = ", ".join(f"{s:.2f}" for s in scores[:4])
        self.candidate_label.setText(f"{which}: predicted IoU {shown}" if scores else "")

    def _on_decode_failed(self, failure) -> None:
        job, exc = failure
        if job.generation >= self._valid_from:
            show_error(f"Segmentation failed: {exc}")

    def invalidate(self) -> None:
        """Drop every decode on its way (the prompts or the output changed under them)."""
        self._valid_from = self._generation = self._generation + 1
        self.decoder.drop_pending()

    # ------------------------------------------------------------------ commit / clear

    def commit(self) -> list[int]:
        """Write the preview into the output layer (one undo step) and clear the prompts.
        Returns the label ids written."""
        if self._valid_from <= self._requested and self._requested > self._applied:
            # a newer decode is on its way: commit what the prompts say, not a stale mask
            show_warning("The preview is still updating; commit again in a moment.")
            return []
        refine, chosen = self.refine_spin.value(), self.label_spin.value()
        joins = not refine and chosen and self.binding.has_label(chosen)
        try:
            ids = self.binding.commit(refine or chosen, replace=bool(refine))
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
        self.reset_ids()
        self.candidate = None
        self.candidate_label.setText("")
        self.committed.emit()
        return ids

    def clear(self) -> None:
        """Remove all prompts and empty the preview."""
        self.invalidate()
        self.binding.clear_prompts()

    @property
    def busy(self) -> bool:
        return self.decoder.busy
