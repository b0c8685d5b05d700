"""The "Refine labels" panel: every object of a Labels layer's displayed slice refined by the
model (:mod:`napari_sam.refinement`), shown as a preview with each object's change, then
accepted whole or object by object, or discarded.

Runs against an :class:`~napari_sam.panel_contract.Engine` like the Automatic tab (the
widget's embeddings are reused); the work runs on a napari ``thread_worker`` as a job of
the engine's scheduler, with its own Cancel. Accepting writes the chosen objects' changes
into the layer as one undoable step; objects not accepted, and objects the model lost
(listed and kept), stay exactly as they were.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from napari.layers import Labels
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_sam._qt.layer_combo import LayerCombo
from napari_sam._qt.workers import WorkFailed
from napari_sam.jobs import Busy, Cancelled, Job, cancellable
from napari_sam.napari_layers import current_index, write_changes

if TYPE_CHECKING:
    import napari

    from napari_sam.panel_contract import Engine
    from napari_sam.refinement import Refinement

PREVIEW_NAME = "refine preview"


class RefinePanel(QWidget):
    """Refine the objects of a Labels layer (the displayed slice of the engine's image).

    ``finished(refinement or None)`` is emitted when a run ends (None when cancelled or
    failed); ``accepted(ids)`` after objects were written into the layer.
    """

    finished = Signal(object)
    accepted = Signal(list)

    def __init__(self, viewer: napari.Viewer, engine: Engine, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer, self.engine = viewer, engine
        self.worker = None
        self.job: Job | None = None
        self._scheduler = None
        self.refinement: Refinement | None = None
        self._target: tuple[Labels, tuple[int, ...], np.ndarray] | None = None
        self.preview: Labels | None = None
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.labels_combo = LayerCombo(viewer, Labels,
                                       accept=lambda layer: layer.name != PREVIEW_NAME)  # fmt: skip
        form.addRow("Labels", self.labels_combo)
        layout.addLayout(form)
        run_row = QHBoxLayout()
        self.run_button = QPushButton("Refine labels")
        self.run_button.setToolTip("Each object of the displayed slice becomes its own mask "
                                   "and box prompt; the result is a preview")  # fmt: skip
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        run_row.addWidget(self.run_button)
        run_row.addWidget(self.cancel_button)
        layout.addLayout(run_row)
        self.objects = QListWidget()
        self.objects.setSelectionMode(QListWidget.SelectionMode.ExtendedSelection)
        layout.addWidget(self.objects)
        accept_row = QHBoxLayout()
        self.accept_all_button = QPushButton("Accept all")
        self.accept_selected_button = QPushButton("Accept selected")
        self.discard_button = QPushButton("Discard")
        for button, slot in ((self.accept_all_button, self.accept_all),
                             (self.accept_selected_button, self.accept_selected),
                             (self.discard_button, self.discard)):  # fmt: skip
            button.clicked.connect(slot)
            accept_row.addWidget(button)
        layout.addLayout(accept_row)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        self._show_proposal(False)

    # ------------------------------------------------------------------ running

    def run(self) -> None:
        """Refine every object of the chosen Labels layer on the displayed slice."""
        from napari.qt.threading import thread_worker

        from napari_sam.refinement import refine_plane_steps

        image, target = self.engine.image_layer(), self.labels_combo.layer()
        if image is None or target is None:
            self.status.setText("Choose an image and a Labels layer first.")
            return
        index: tuple[int, ...] = ()
        if target.data.ndim > 2:
            try:
                index = current_index(image, self.viewer)
            except ValueError as exc:
                self.status.setText(str(exc))
                return
        plane = np.array(target.data[index])  # (H, W) copy: the layer may change meanwhile
        if plane.shape != tuple(image.data.shape[-2:]) and not image.rgb:
            self.status.setText(f"The labels' plane {plane.shape} is not the image's "
                                f"{tuple(image.data.shape[-2:])}.")  # fmt: skip
            return
        if not plane.any():
            self.status.setText("The labels hold no object on this slice.")
            return
        scheduler = getattr(self.engine, "scheduler", None)
        try:
            job = scheduler.start("refine") if scheduler is not None else Job("refine")
        except Busy as exc:
            self.status.setText(str(exc))
            return
        self.discard()
        self.job, self._scheduler = job, scheduler
        self._target = (target, index, plane)
        engine = self.engine
        opener = getattr(engine, "embeddings_opener", None)
        opener = opener(index if index else None) if opener is not None else None
        data = image.data[0] if image.multiscale else image.data
        limits = tuple(float(v) for v in image.contrast_limits)
        rgb = bool(image.rgb)

        @thread_worker
        def work():
            with cancellable(job.token):
                try:
                    predictor = engine.predictor()
                    embeddings = (opener(predictor) if opener is not None else
                                  _plain_embeddings(predictor, data[index], rgb, limits))  # fmt: skip
                    return (yield from refine_plane_steps(embeddings, predictor, 0, plane))
                except Cancelled:
                    return None
                except RuntimeError as exc:
                    raise WorkFailed(exc) from exc

        self.worker = work()
        self.worker.yielded.connect(self._on_progress)
        self.worker.returned.connect(self._on_done)
        self.worker.errored.connect(self._on_error)
        self.worker.finished.connect(self._on_worker_finished)
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.status.setText("Loading the model...")
        self.worker.start()

    def cancel(self) -> None:
        """Stop the running refinement; nothing is changed. Only this panel's job stops."""
        if self.worker is not None:
            self.status.setText("Cancelling...")
            self.job.cancel()
            self.worker.quit()

    def _on_progress(self, step: tuple[int, int]) -> None:
        self.status.setText(f"Refining: object {step[0]} of {step[1]}")

    def _idle(self) -> None:
        if self._scheduler is not None and self.job is not None:
            self._scheduler.finish(self.job)
        self.job, self.worker = None, None
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def _on_worker_finished(self) -> None:
        if self.worker is not None:  # cancelled inside the encoder: no other signal came
            self._idle()
            self.status.setText("Cancelled.")
            self.finished.emit(None)

    def _on_error(self, exc: BaseException) -> None:
        self._idle()
        self.status.setText(f"Failed: {exc}")
        self.finished.emit(None)

    def _on_done(self, refinement: Refinement | None) -> None:
        self._idle()
        if refinement is None:
            self.status.setText("Cancelled.")
            self.finished.emit(None)
            return
        self.refinement = refinement
        target, _index, plane = self._target
        proposal = refinement.apply(plane)
        self.preview = self.viewer.add_labels(
            proposal, name=PREVIEW_NAME, opacity=0.6, scale=target.scale[-2:],
            translate=target.translate[-2:],
        )  # fmt: skip
        self.objects.clear()
        for label, change in sorted(refinement.changes.items()):
            text = (f"{label}: lost by the model, kept as it was" if change.lost else
                    f"{label}: area {change.area_before} -> {change.area_after}, "
                    f"IoU with before {change.iou:.2f}")  # fmt: skip
            item = QListWidgetItem(text)
            item.setData(Qt.ItemDataRole.UserRole, label)
            if change.lost:
                item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsSelectable)
            self.objects.addItem(item)
        lost = refinement.lost
        self.status.setText(f"Refined {len(refinement.masks)} objects"
                            + (f"; {len(lost)} lost, kept: {lost[:10]}" if lost else "")
                            + ". Accept all, select objects to accept, or discard.")  # fmt: skip
        self._show_proposal(True)
        self.finished.emit(refinement)

    # ------------------------------------------------------------------ accepting

    def selected_ids(self) -> list[int]:
        """The label ids selected in the list."""
        return [int(item.data(Qt.ItemDataRole.UserRole)) for item in self.objects.selectedItems()]

    def accept_all(self) -> None:
        """Write every refined object into the layer (one undoable step)."""
        if self.refinement is not None:
            self._accept(list(self.refinement.masks))

    def accept_selected(self) -> None:
        """Write the selected objects' refinements into the layer (one undoable step)."""
        ids = self.selected_ids()
        if not ids:
            self.status.setText("Select the objects to accept in the list.")
            return
        self._accept(ids)

    def _accept(self, ids: list[int]) -> None:
        target, index, plane = self._target
        current = np.asarray(target.data[index])
        if not np.array_equal(current, plane):
            self.status.setText("The labels changed since the refinement ran; nothing was "
                                "written. Refine again.")  # fmt: skip
            return
        changed = write_changes(target, index, plane, self.refinement.apply(plane, ids))
        self.discard()
        self.status.setText(f"Accepted {len(ids)} objects ({changed} pixels changed; "
                            "Ctrl-Z undoes it).")  # fmt: skip
        self.accepted.emit(ids)

    def discard(self) -> None:
        """Drop the proposal and its preview; the labels are unchanged."""
        if self.preview is not None and self.preview in self.viewer.layers:
            self.viewer.layers.remove(self.preview)
        self.preview, self.refinement = None, None
        self.objects.clear()
        self._show_proposal(False)

    def _show_proposal(self, shown: bool) -> None:
        for button in (self.accept_all_button, self.accept_selected_button,
                       self.discard_button):  # fmt: skip
            button.setEnabled(shown)


def _plain_embeddings(predictor, plane: np.ndarray, rgb: bool, limits):
    """Embeddings of one plane computed on demand (an engine without shared embeddings)."""
    from napari_sam.plane_segmentation import WindowEmbeddings
    from napari_sam.tile_grid import default_grid

    plane = np.asarray(plane)
    grid = default_grid(plane.shape[:2], predictor.config.image_size)

    def embed(_s, w):
        return predictor.embed(plane[w[0] : w[2], w[1] : w[3]], rgb=rgb,
                               contrast_limits=None if rgb else limits)  # fmt: skip

    return WindowEmbeddings(grid, embed)
