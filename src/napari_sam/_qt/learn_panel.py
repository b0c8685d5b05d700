"""The "From my objects" panel: the objects committed so far teach the plugin.

- **Find similar (F)**: every object like the committed ones (or the ids given) on the
  displayed slice, or on every slice (:func:`~napari_sam.automatic.similar.find_similar_steps`),
  shown as a preview. The user accepts all, or object by object (one undoable step, into
  empty pixels only), or rejects objects: they are kept as negative examples for the next
  search of the same layer.
- **Adapt to my objects**: a short finetune on the committed objects
  (:func:`~napari_sam.training.adapt.adapt_steps`) within a time budget; afterwards the
  engine's prompts use the adapted model until "Back to base model". "Save adapted..."
  writes a weights file that loads like any other.

Each runs as its own job (:class:`~napari_sam._qt.panel_job.PanelJob`) with its own Cancel;
a cancelled or failed run changes nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from napari.layers import Labels
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_sam._qt.layer_combo import LayerCombo
from napari_sam._qt.panel_job import PanelJob
from napari_sam.napari_layers import current_index, spatial_shape, write_changes
from napari_sam.training.adapt import AdaptSettings

if TYPE_CHECKING:
    import napari

    from napari_sam.panel_contract import Engine
    from napari_sam.training.adapt import Adapted

PREVIEW_NAME = "similar preview"


class LearnPanel(QWidget):
    """Find similar objects and adapt the model, from the objects of a Labels layer.

    ``similar_finished(labels or None)``: a search ended (the new objects, None when it was
    cancelled, failed or found nothing); ``accepted(ids)``: objects were written into the
    layer; ``adapt_finished(Adapted or None)``: an adaptation ended.
    """

    similar_finished = Signal(object)
    accepted = Signal(list)
    adapt_finished = Signal(object)

    def __init__(self, viewer: napari.Viewer, engine: Engine, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer, self.engine = viewer, engine
        self.similar_job = PanelJob(engine, "similar", self)
        self.adapt_job = PanelJob(engine, "adapt", self)
        self.found: np.ndarray | None = None
        self._target: tuple[Labels, tuple[int, ...], np.ndarray] | None = None
        self._rejected: tuple[Labels, tuple[int, ...], np.ndarray] | None = None
        self.preview: Labels | None = None
        self.adapted: Adapted | None = None
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.objects_combo = LayerCombo(viewer, Labels,
                                        accept=lambda layer: layer.name != PREVIEW_NAME)  # fmt: skip
        form.addRow("Objects", self.objects_combo)
        layout.addLayout(form)
        layout.addWidget(self._similar_box())
        layout.addWidget(self._adapt_box())
        layout.addStretch(1)
        self._wire_jobs()
        self._show_found(False)

    # ------------------------------------------------------------------ layout

    def _similar_box(self) -> QGroupBox:
        box = QGroupBox("Find similar")
        layout = QVBoxLayout(box)
        form = QFormLayout()
        self.example_ids = QLineEdit()
        self.example_ids.setPlaceholderText("every object")
        self.example_ids.setToolTip("Ids of the example objects, e.g. 3, 7, 12")
        form.addRow("Examples", self.example_ids)
        self.every_slice = QCheckBox("Every slice")
        form.addRow("", self.every_slice)
        layout.addLayout(form)
        row = QHBoxLayout()
        self.find_button = QPushButton("Find similar (F)")
        self.find_button.setToolTip("Find every object like the examples where nothing is "
                                    "committed yet; the result is a preview")  # fmt: skip
        self.find_cancel = QPushButton("Cancel")
        row.addWidget(self.find_button)
        row.addWidget(self.find_cancel)
        layout.addLayout(row)
        self.found_list = QListWidget()
        self.found_list.setSelectionMode(QListWidget.SelectionMode.ExtendedSelection)
        layout.addWidget(self.found_list)
        row = QHBoxLayout()
        self.accept_all_button = QPushButton("Accept all")
        self.accept_selected_button = QPushButton("Accept selected")
        self.reject_selected_button = QPushButton("Reject selected")
        self.reject_selected_button.setToolTip("Drop them from the preview; the next search "
                                               "avoids objects like them")  # fmt: skip
        self.discard_button = QPushButton("Discard")
        for button in (self.accept_all_button, self.accept_selected_button,
                       self.reject_selected_button, self.discard_button):  # fmt: skip
            row.addWidget(button)
        layout.addLayout(row)
        self.similar_status = QLabel("")
        self.similar_status.setWordWrap(True)
        layout.addWidget(self.similar_status)
        self.find_button.clicked.connect(self.find_similar)
        self.find_cancel.clicked.connect(self.similar_job.cancel)
        self.accept_all_button.clicked.connect(self.accept_all)
        self.accept_selected_button.clicked.connect(self.accept_selected)
        self.reject_selected_button.clicked.connect(self.reject_selected)
        self.discard_button.clicked.connect(self.discard)
        return box

    def _adapt_box(self) -> QGroupBox:
        box = QGroupBox("Adapt to my objects")
        layout = QVBoxLayout(box)
        form = QFormLayout()
        self.budget = QDoubleSpinBox()
        self.budget.setRange(5, 3600)
        self.budget.setSuffix(" s")
        self.budget.setValue(AdaptSettings.budget_s)
        self.budget.setToolTip("Training time; larger models need more")
        form.addRow("Time budget", self.budget)
        self.adapt_target = QComboBox()
        # (target, decoder part) of AdaptSettings
        self.adapt_target.addItem("Mask decoder's output heads", ("decoder", "heads"))
        self.adapt_target.addItem("Whole mask decoder", ("decoder", "all"))
        self.adapt_target.addItem("Output heads + encoder adapters (re-embeds)",
                                  ("decoder+encoder", "heads"))  # fmt: skip
        default = (AdaptSettings.target, AdaptSettings.decoder_part)
        self.adapt_target.setCurrentIndex(next(i for i in range(self.adapt_target.count())
                                               if self.adapt_target.itemData(i) == default))  # fmt: skip
        form.addRow("Learns", self.adapt_target)
        layout.addLayout(form)
        row = QHBoxLayout()
        self.adapt_button = QPushButton("Adapt to my objects")
        self.adapt_button.setToolTip("Train on the committed objects of the displayed slice "
                                     "(of every slice with objects in a stack)")  # fmt: skip
        self.adapt_cancel = QPushButton("Cancel")
        row.addWidget(self.adapt_button)
        row.addWidget(self.adapt_cancel)
        layout.addLayout(row)
        self.adapt_progress = QProgressBar()
        layout.addWidget(self.adapt_progress)
        row = QHBoxLayout()
        self.revert_button = QPushButton("Back to base model")
        self.save_button = QPushButton("Save adapted...")
        row.addWidget(self.revert_button)
        row.addWidget(self.save_button)
        layout.addLayout(row)
        self.adapt_status = QLabel("")
        self.adapt_status.setWordWrap(True)
        layout.addWidget(self.adapt_status)
        self.adapt_button.clicked.connect(self.adapt)
        self.adapt_cancel.clicked.connect(self.adapt_job.cancel)
        self.revert_button.clicked.connect(self.revert)
        self.save_button.clicked.connect(self._ask_save)
        return box

    def _wire_jobs(self) -> None:
        s, a = self.similar_job, self.adapt_job
        s.progress.connect(lambda done, total: self.similar_status.setText(
            f"Finding similar objects: step {done} of {total}"))  # fmt: skip
        s.done.connect(self._on_found)
        s.failed.connect(lambda text: self._similar_ended(f"Failed: {text}"))
        s.cancelled.connect(lambda: self._similar_ended("Cancelled."))
        a.progress.connect(self._on_adapt_progress)
        a.done.connect(self._on_adapted)
        a.failed.connect(lambda text: self._adapt_ended(f"Failed: {text}"))
        a.cancelled.connect(lambda: self._adapt_ended("Cancelled: the model is unchanged."))
        self._set_running()

    def _set_running(self) -> None:
        self.find_button.setEnabled(not self.similar_job.running)
        self.find_cancel.setEnabled(self.similar_job.running)
        self.adapt_button.setEnabled(not self.adapt_job.running)
        self.adapt_cancel.setEnabled(self.adapt_job.running)
        self.revert_button.setEnabled(self.adapted is not None and not self.adapt_job.running)
        self.save_button.setEnabled(self.adapted is not None)

    # ------------------------------------------------------------------ the region

    def _region(self, every_slice: bool):
        """(image layer, objects layer, leading index) of the work, or a message."""
        image, target = self.engine.image_layer(), self.objects_combo.layer()
        if image is None or target is None:
            return "Choose an image and the Labels layer of your objects first."
        if tuple(target.data.shape) != spatial_shape(image):
            return (f"The objects layer {tuple(target.data.shape)} does not match the image "
                    f"{spatial_shape(image)}.")  # fmt: skip
        index: tuple[int, ...] = ()
        if target.data.ndim > 2 and not every_slice:
            try:
                index = current_index(image, self.viewer)
            except ValueError as exc:
                return str(exc)
        return image, target, index

    # ------------------------------------------------------------------ find similar

    def find_similar(self) -> None:
        """Search the displayed slice (or every slice) for objects like the examples."""
        from napari_sam.automatic.similar import find_similar_steps

        region = self._region(self.every_slice.isChecked())
        if isinstance(region, str):
            self.similar_status.setText(region)
            return
        image, target, index = region
        try:
            ids = [int(t) for t in self.example_ids.text().replace(",", " ").split()] or None
        except ValueError:
            self.similar_status.setText("Examples: give label ids separated by commas.")
            return
        committed = np.array(target.data[index])
        if not committed.any():
            self.similar_status.setText("Commit a few example objects first.")
            return
        rejected = self._rejected_for(target, index, committed.shape)
        data = image.data[0] if image.multiscale else image.data
        data = data[index] if index else data
        limits = tuple(float(v) for v in image.contrast_limits)
        rgb = bool(image.rgb)
        opener = getattr(self.engine, "embeddings_opener", None)
        opener = opener(index if index else None) if opener is not None else None
        self.discard()
        self._target = (target, index, committed)

        def steps(predictor):
            embeddings = opener(predictor) if opener is not None else None
            return find_similar_steps(predictor, data, committed, rejected=rejected, ids=ids,
                                      rgb=rgb, contrast_limits=None if rgb else limits,
                                      embeddings=embeddings)  # fmt: skip

        why = self.similar_job.start(steps)
        if why is not None:
            self.similar_status.setText(why)
            return
        self.similar_status.setText("Loading the model...")
        self._set_running()

    def _rejected_for(self, target: Labels, index, shape) -> np.ndarray | None:
        """The objects rejected before on this layer and region (None when there are none)."""
        if self._rejected is None:
            return None
        layer, where, rejected = self._rejected
        if layer is not target or where != index or rejected.shape != shape:
            self._rejected = None
            return None
        return rejected

    def _similar_ended(self, text: str) -> None:
        self._set_running()
        self.similar_status.setText(text)
        self.similar_finished.emit(None)

    def _on_found(self, found: np.ndarray) -> None:
        self._set_running()
        ids = [int(i) for i in np.unique(found) if i]
        if not ids:
            self.similar_status.setText("Found nothing new like the examples.")
            self.similar_finished.emit(None)
            return
        target, index, _committed = self._target
        self.found = found
        self.preview = self.viewer.add_labels(
            found, name=PREVIEW_NAME, opacity=0.6, scale=target.scale[len(index):],
            translate=target.translate[len(index):],
        )  # fmt: skip
        areas = np.bincount(found.ravel())
        for i in ids:
            item = QListWidgetItem(f"{i}: {int(areas[i])} px")
            item.setData(Qt.ItemDataRole.UserRole, i)
            self.found_list.addItem(item)
        self.similar_status.setText(f"Found {len(ids)} objects. Accept all, select objects to "
                                    "accept or reject, or discard.")  # fmt: skip
        self._show_found(True)
        self.similar_finished.emit(found)

    def selected_ids(self) -> list[int]:
        """The preview ids selected in the list."""
        return [int(i.data(Qt.ItemDataRole.UserRole)) for i in self.found_list.selectedItems()]

    def accept_all(self) -> None:
        """Write every previewed object into the layer (one undoable step)."""
        if self.found is not None:
            self._accept([int(i) for i in np.unique(self.found) if i])

    def accept_selected(self) -> None:
        """Write the selected previewed objects into the layer (one undoable step)."""
        ids = self.selected_ids()
        if not ids:
            self.similar_status.setText("Select the objects to accept in the list.")
            return
        self._accept(ids)

    def _accept(self, ids: list[int]) -> None:
        target, index, committed = self._target
        current = np.asarray(target.data[index])
        if not np.array_equal(current, committed):
            self.similar_status.setText("The objects changed since the search ran; nothing "
                                        "was written. Search again.")  # fmt: skip
            return
        pick = np.isin(self.found, ids) & (current == 0)
        write_changes(target, index, committed, np.where(pick, self.found, committed))
        self.discard()
        self.similar_status.setText(f"Accepted {len(ids)} objects (Ctrl-Z undoes it).")
        self.accepted.emit(ids)

    def reject_selected(self) -> None:
        """Drop the selected objects from the preview and keep them as negative examples
        for the next search of this layer and region."""
        ids = self.selected_ids()
        if not ids or self.found is None:
            self.similar_status.setText("Select the objects to reject in the list.")
            return
        target, index, committed = self._target
        rejected = self._rejected_for(target, index, committed.shape)
        rejected = np.zeros(committed.shape, np.int32) if rejected is None else rejected.copy()
        start = int(rejected.max())
        for n, i in enumerate(ids, 1):
            rejected[self.found == i] = start + n
        self._rejected = (target, index, rejected)
        self.found = np.where(np.isin(self.found, ids), 0, self.found)
        if self.preview is not None:
            self.preview.data = self.found
        for item in self.found_list.selectedItems():
            self.found_list.takeItem(self.found_list.row(item))
        self.similar_status.setText(f"Rejected {len(ids)}: the next search avoids objects "
                                    "like them.")  # fmt: skip

    def discard(self) -> None:
        """Drop the preview; the layer is unchanged (rejected objects are remembered)."""
        if self.preview is not None and self.preview in self.viewer.layers:
            self.viewer.layers.remove(self.preview)
        self.preview, self.found = None, None
        self.found_list.clear()
        self._show_found(False)

    def _show_found(self, shown: bool) -> None:
        for button in (self.accept_all_button, self.accept_selected_button,
                       self.reject_selected_button, self.discard_button):  # fmt: skip
            button.setEnabled(shown)

    # ------------------------------------------------------------------ adapt

    def adapt(self) -> None:
        """Train a copy of the model on the committed objects; the model in use is
        replaced only when it ends."""
        from napari_sam.training.adapt import CommittedPlane, adapt_steps

        region = self._region(every_slice=True)
        if isinstance(region, str):
            self.adapt_status.setText(region)
            return
        image, target, _ = region
        data = image.data[0] if image.multiscale else image.data
        limits = None if image.rgb else tuple(float(v) for v in image.contrast_limits)
        planes = []
        for index in _slices_with_objects(target.data):
            labels = np.asarray(target.data[index]).astype(np.int64)
            planes.append(CommittedPlane(np.asarray(data[index]), labels, limits, bool(image.rgb)))
        if not planes:
            self.adapt_status.setText("Commit some objects first: adapting learns from them.")
            return
        learns, part = self.adapt_target.currentData()
        settings = AdaptSettings(budget_s=float(self.budget.value()), target=learns,
                                 decoder_part=part)  # fmt: skip

        def steps(predictor):  # the model in use: adapting again goes on from the adapted one
            return adapt_steps(predictor, planes, settings)

        why = self.adapt_job.start(steps)
        if why is not None:
            self.adapt_status.setText(why)
            return
        self.adapt_progress.setRange(0, 0)
        self.adapt_status.setText("Loading the model...")
        self._set_running()

    def _on_adapt_progress(self, done: int, total: int) -> None:
        self.adapt_progress.setRange(0, total)
        self.adapt_progress.setValue(done)
        self.adapt_status.setText(f"Adapting: {done} of {total} s")

    def _adapt_ended(self, text: str, adapted: Adapted | None = None) -> None:
        self.adapt_progress.setRange(0, 1)
        self.adapt_progress.setValue(0)
        self._set_running()
        self.adapt_status.setText(text)
        self.adapt_finished.emit(adapted)

    def _on_adapted(self, adapted: Adapted) -> None:
        use = getattr(self.engine, "use_adapted", None)
        if use is not None and not use(adapted):
            self._adapt_ended("The model was changed while adapting; the adaptation was "
                              "dropped.")  # fmt: skip
            return
        self.adapted = adapted
        r = adapted.report
        self._adapt_ended(f"Adapted on {r.objects} objects ({r.steps} steps, {r.seconds:.0f} s; "
                          f"loss {r.first_loss:.3f} -> {r.last_loss:.3f}). Prompts now use the "
                          "adapted model." + _choice_text(r.choice) +
                          (" Images are embedded again." if adapted.encoder_changed else ""),
                          adapted)  # fmt: skip

    def revert(self) -> None:
        """Prompts use the base model again (the adapted one can still be saved first)."""
        revert = getattr(self.engine, "revert_model", None)
        if self.adapted is None:
            return
        if revert is not None:
            revert()
        self.adapted = None
        self._set_running()
        self.adapt_status.setText("Back to the base model.")

    def save_adapted(self, path: str) -> None:
        """Write the adapted weights to ``path`` (a file that loads like any other)."""
        if self.adapted is None:
            self.adapt_status.setText("Nothing adapted to save.")
            return
        try:
            saved = self.adapted.save(path)
        except OSError as exc:
            self.adapt_status.setText(f"Could not save: {exc}")
            return
        self.adapt_status.setText(f"Saved the adapted weights to {saved}; choose the file as "
                                  "a model to use them again.")  # fmt: skip

    def _ask_save(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save adapted weights", "adapted.pt",
                                              "Weights (*.pt *.pth)")  # fmt: skip
        if path:
            self.save_adapted(path)


def _slices_with_objects(labels) -> list[tuple[int, ...]]:
    """Leading indices of the 2D planes of ``labels`` (any leading dims) holding an object
    (``()`` for 2D)."""
    labels = np.asarray(labels)
    if labels.ndim == 2:
        return [()] if labels.any() else []
    lead = labels.shape[:-2]
    flat = labels.reshape(-1, *labels.shape[-2:]).any(axis=(1, 2))
    return [tuple(int(i) for i in np.unravel_index(s, lead)) for s in np.nonzero(flat)[0]]


def _choice_text(choice) -> str:
    """What the fitted mask choice changed, in words ('' when nothing)."""
    if choice is None:
        return ""
    before, after = dict(choice.before), dict(choice.after)
    words = {"0": "the single-mask output", "best": "the best of three by predicted IoU",
             "any": "the best of four by predicted IoU"}
    plural = {"box": "Boxes", "click": "Clicks"}
    changed = [f"{plural[family]} get {words.get(mode, f'mask {mode}')} ({before[family]:.2f} "
               f"-> {after[family]:.2f} IoU on your objects)." for family, mode in choice.modes
               if family in before and after[family] > before[family]]  # fmt: skip
    return "".join(" " + text for text in changed)
