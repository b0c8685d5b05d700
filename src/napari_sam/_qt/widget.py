"""The Segment Anything dock widget: pickers, embedding, live preview, commit.

Layout: the model section (image layer, model, device, precision, Embed / Cancel with a
progress bar, a status line), then the prompt section (negative-point toggle, label id,
output layer, refine, Clear / Commit, segment through the stack). Logic on layers lives in
:class:`~napari_sam._qt.controller.SegmentController`; slow work runs on workers
(:mod:`napari_sam._qt.workers`). Keys on the prompt layers: ``C`` commit, ``Shift-C``
clear, ``N`` toggle negative points, ``Shift-S`` segment through the stack.
"""

from __future__ import annotations

import importlib.util
import threading
from typing import TYPE_CHECKING

from napari.layers import Image, Labels
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from napari_sam._qt.controller import EmbeddingCache, SegmentController, spatial_shape
from napari_sam._qt.layer_combo import LayerCombo
from napari_sam._qt.models import (
    ModelChoice,
    ModelHolder,
    describe,
    file_choice,
    registry_choices,
)
from napari_sam._qt.workers import (
    DecodeJob,
    DecodeResult,
    Embedded,
    LiveDecoder,
    Progress,
    start_embedding,
)

if TYPE_CHECKING:
    import napari

    from napari_sam.predictor import Predictor

FROM_FILE = "from file..."
DEVICES = ("auto", "cuda", "mps", "cpu")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_PROPAGATION_MISSING = (
    "Segmenting an object through the stack needs napari_sam.volume, which this version "
    "does not have yet."
)


def _disconnector(emitter, callback):
    """A function that disconnects ``callback`` (for a widget's ``destroyed`` signal; it
    holds no reference to the widget itself)."""

    def disconnect(*_args):
        emitter.disconnect(callback)

    return disconnect


class WidgetEngine:
    """The :class:`~napari_sam._qt.engine.Engine` of a :class:`SamWidget`: the model and
    image layer chosen in its pickers (for panels such as the automatic segmentation)."""

    def __init__(self, widget: SamWidget) -> None:
        self._widget = widget

    def predictor(self) -> Predictor:
        """Load (on first use; call from a worker thread) and return the chosen model."""
        return self._widget.models.predictor()

    def image_layer(self) -> Image | None:
        """The image layer chosen in the widget (GUI thread)."""
        return self._widget.image_combo.layer()


class SamWidget(QWidget):
    """Dock widget of the plugin; holds the viewer it was opened in."""

    #: emitted after the preview layer shows a new decode (the benchmark and tests wait on it)
    preview_updated = Signal()
    #: emitted when an embedding worker has finished (completed, cancelled or failed)
    embedding_finished = Signal()

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        # napari hands plugins a proxy that wraps every layer it returns in a new proxy; the
        # widget holds layer references and compares them by identity, so it works on the
        # viewer itself (through its public API only).
        napari_viewer = getattr(napari_viewer, "__wrapped__", napari_viewer)
        self._viewer = napari_viewer
        self.controller = SegmentController(napari_viewer)
        self.models = ModelHolder()
        self.engine = WidgetEngine(self)
        self.cache = EmbeddingCache()
        self.decoder = LiveDecoder(self)
        self.decoder.decoded.connect(self._on_decoded)
        self.decoder.failed.connect(self._on_decode_failed)
        self._generation = 0  # of the latest preview request
        self._valid_from = 0  # decodes of older requests are dropped (after clear / commit)
        self._applied = -1
        self._requested = -1  # generation of the latest decode submitted
        self._embed_worker = None
        self._cancel = threading.Event()
        self._after_embed = False
        self._last_embed_note = ""
        self._watched_image: Image | None = None
        self._build()
        self._on_model_choice()
        napari_viewer.dims.events.current_step.connect(self._on_slice)
        self.destroyed.connect(
            _disconnector(napari_viewer.dims.events.current_step, self._on_slice)
        )
        self._image_timer.start()

    # ------------------------------------------------------------------ layout

    def _build(self) -> None:
        viewer = self._viewer
        outer = QVBoxLayout(self)
        interactive = QWidget()
        layout = QVBoxLayout(interactive)

        model_box = QGroupBox("Image and model")
        form = QFormLayout(model_box)
        self.image_combo = LayerCombo(viewer, Image)
        self.image_combo.setToolTip("The image to segment (its displayed 2D slice)")
        # layers are made outside the viewer's own layer events (later in the event loop)
        self._image_timer = QTimer(self)
        self._image_timer.setSingleShot(True)
        self._image_timer.setInterval(0)
        self._image_timer.timeout.connect(lambda: self._on_image(self.image_combo.layer()))
        self.image_combo.layer_changed.connect(lambda _layer: self._image_timer.start())
        form.addRow("image", self.image_combo)
        self.model_combo = QComboBox()
        for n, choice in enumerate(registry_choices()):
            self.model_combo.addItem(choice.label, choice)
            self.model_combo.setItemData(n, describe(choice), Qt.ItemDataRole.ToolTipRole)
        self.model_combo.addItem(FROM_FILE, None)
        for combo in (self.model_combo, self.image_combo):
            combo.setSizeAdjustPolicy(
                QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
            )
            combo.setMinimumContentsLength(12)
        self.model_combo.setToolTip("Weights: the bundled model, named checkpoints (with their "
                                    "download state), or a weights file")  # fmt: skip
        self._model_index = 0
        self.model_combo.currentIndexChanged.connect(self._on_model_index)
        form.addRow("model", self.model_combo)
        self.device_combo = QComboBox()
        self.device_combo.addItems(DEVICES)
        self.precision_combo = QComboBox()
        self.precision_combo.addItems(PRECISIONS)
        self.device_combo.currentIndexChanged.connect(self._on_model_choice)
        self.precision_combo.currentIndexChanged.connect(self._on_model_choice)
        row = QHBoxLayout()
        row.addWidget(self.device_combo)
        row.addWidget(QLabel("precision"))
        row.addWidget(self.precision_combo)
        form.addRow("device", row)
        self.embed_button = QPushButton("Embed")
        self.embed_button.setToolTip("Compute the image embedding (displayed slice first, then "
                                     "the rest of a stack); prompts embed on first use too")  # fmt: skip
        self.embed_button.clicked.connect(self.embed_all)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel_embedding)
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        row = QHBoxLayout()
        row.addWidget(self.embed_button)
        row.addWidget(self.cancel_button)
        form.addRow(row)
        form.addRow(self.progress)
        self.status = QLabel()
        self.status.setWordWrap(True)
        form.addRow(self.status)
        layout.addWidget(model_box)

        prompt_box = QGroupBox("Prompts and objects")
        form = QFormLayout(prompt_box)
        form.addRow(QLabel("Click: positive point. N or the button: negative points. "
                           "Draw boxes / polygons on the boxes layer (many boxes = many "
                           "objects)."))  # fmt: skip
        form.itemAt(form.rowCount() - 1, QFormLayout.ItemRole.SpanningRole).widget().setWordWrap(
            True
        )
        self.negative_button = QPushButton("Negative points (N)")
        self.negative_button.setCheckable(True)
        self.negative_button.toggled.connect(self._on_negative)
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
        self.refine_spin.valueChanged.connect(self._on_refine)
        self.pick_button = QPushButton("Use selected label")
        self.pick_button.setToolTip("Refine the label selected in the output layer")
        self.pick_button.clicked.connect(self._pick_refine)
        row = QHBoxLayout()
        row.addWidget(self.refine_spin)
        row.addWidget(self.pick_button)
        form.addRow("refine", row)
        self.clear_button = QPushButton("Clear (Shift+C)")
        self.clear_button.clicked.connect(self.clear)
        self.commit_button = QPushButton("Commit (C)")
        self.commit_button.clicked.connect(self.commit)
        row = QHBoxLayout()
        row.addWidget(self.clear_button)
        row.addWidget(self.commit_button)
        form.addRow(row)
        self.propagate_button = QPushButton("Segment through stack (Shift+S)")
        self._volume = importlib.util.find_spec("napari_sam.volume") is not None
        self.propagate_button.setEnabled(False)
        self.propagate_button.setToolTip(
            "Segment the current object through the stack" if self._volume else _PROPAGATION_MISSING
        )
        self.propagate_button.clicked.connect(self.propagate)
        form.addRow(self.propagate_button)
        layout.addWidget(prompt_box)
        layout.addStretch(1)

        self.tabs = QTabWidget()
        self.tabs.addTab(interactive, "Interactive")
        if importlib.util.find_spec("napari_sam._qt.auto_panel") is not None:
            try:
                from napari_sam._qt.auto_panel import AutoPanel

                self.tabs.addTab(AutoPanel(viewer, self.engine), "Automatic")
            except Exception as exc:  # a broken optional panel must not break this widget
                show_warning(f"The automatic segmentation panel could not be opened: {exc}")
        outer.addWidget(self.tabs)
        self._update_status()

    def _is_output_candidate(self, layer) -> bool:
        return layer is not self.controller.preview

    # ------------------------------------------------------------------ model choice

    def add_model(self, choice: ModelChoice, select: bool = True) -> None:
        """Add an entry to the model picker (before "from file...") and select it."""
        at = self.model_combo.count() - 1
        self.model_combo.insertItem(at, choice.label, choice)
        if select:
            self.model_combo.setCurrentIndex(at)

    def _on_model_index(self, i: int) -> None:
        if self.model_combo.itemData(i) is None and self.model_combo.itemText(i) == FROM_FILE:
            path, _ = QFileDialog.getOpenFileName(
                self, "Choose SAM weights", "", "PyTorch weights (*.pt *.pth);;All files (*)"
            )
            if path:
                self.add_model(file_choice(path))
            else:
                self.model_combo.setCurrentIndex(self._model_index)
            return
        self._model_index = i
        self._on_model_choice()

    def _on_model_choice(self, _=None) -> None:
        choice = self.model_combo.itemData(self._model_index)
        if choice is None:
            return
        device = self.device_combo.currentText()
        precision = self.precision_combo.currentText()
        if self.models.choose(choice, device, precision):
            self.controller.show_preview((), None)
            self._update_status()

    # ------------------------------------------------------------------ layers

    def _on_image(self, image) -> None:
        old = self._watched_image
        if old is not None:
            old.events.contrast_limits.disconnect(self._on_contrast)
        self._watched_image = image
        if image is not None:
            image.events.contrast_limits.connect(self._on_contrast)
        made = self.controller.use_image(image)
        for layer in made:
            if layer is self.controller.points or layer is self.controller.shapes:
                self._bind_keys(layer)
                layer.events.data.connect(self._on_prompt_data)
            if layer is self.controller.output:
                self.output_combo.set_layer(layer)
        if self.controller.points is not None and made:
            self._viewer.layers.selection.active = self.controller.points
            self.controller.points.mode = "add"
        self.propagate_button.setEnabled(
            self._volume and image is not None and len(spatial_shape(image)) > 2
        )
        self._update_status()

    def _on_output(self, layer) -> None:
        if layer is not None:
            self.controller.output = layer

    def _bind_keys(self, layer) -> None:
        layer.bind_key("c", lambda _layer: self.commit(), overwrite=True)
        layer.bind_key("Shift-C", lambda _layer: self.clear(), overwrite=True)
        layer.bind_key("n", lambda _layer: self.negative_button.toggle(), overwrite=True)
        layer.bind_key("Shift-S", lambda _layer: self.propagate(), overwrite=True)

    def _on_contrast(self, _event=None) -> None:
        self._update_status()

    def _on_negative(self, negative: bool) -> None:
        self.controller.set_negative(negative)

    def _on_refine(self, _value=None) -> None:
        self.request_preview()

    def _pick_refine(self) -> None:
        output = self.controller.output
        if output is None:
            show_error("Choose an output labels layer to pick an object from.")
            return
        self.refine_spin.setValue(int(output.selected_label))

    def _on_prompt_data(self, event) -> None:
        action = str(getattr(event, "action", "changed"))
        if action.endswith(("adding", "removing")):
            return
        self.request_preview()

    def _on_slice(self, _event=None) -> None:
        if self.controller.image is not None and len(spatial_shape(self.controller.image)) > 2:
            self.request_preview()
            self._update_status()

    # ------------------------------------------------------------------ embedding

    def _cache_key(self) -> tuple:
        image = self.controller.image
        return (
            id(image),
            id(image.data),
            tuple(float(x) for x in image.contrast_limits),
            self.models.wanted,
        )

    def _check_image(self) -> Image | None:
        image = self.controller.image
        if image is None:
            others = [f"{lay.name!r} ({type(lay).__name__})" for lay in self._viewer.layers]
            found = f"; the viewer has {', '.join(others)}, not an image" if others else ""
            show_error(f"Segment Anything needs an Image layer: open or choose one{found}.")
            return None
        if not self.controller.layers_present():
            self.controller.use_image(image)
        return image

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
        done = set(self.cache.indices(key))
        order = [index] + [tuple(int(i) for i in ix) for ix in np.ndindex(*lead) if ix != index]
        self._embed([ix for ix in order if ix not in done], decode_after=False)

    def _embed(self, indices, decode_after: bool) -> None:
        if decode_after:
            self._after_embed = True
        if self._embed_worker is not None:
            return
        image = self.controller.image
        if not indices:
            show_info("Already embedded.")
            return
        data = image.data[0] if image.multiscale else image.data
        self._cancel = threading.Event()
        worker = start_embedding(
            self.models.predictor, data, list(indices), self._cache_key(), self._cancel,
            rgb=bool(image.rgb), contrast_limits=tuple(image.contrast_limits),
        )  # fmt: skip
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
        self._cancel.set()
        self._embed_worker.quit()
        self._last_embed_note = "embedding cancelled"

    def _on_embed_step(self, item) -> None:
        if isinstance(item, Progress):
            self.progress.setValue(item.done)
            self.progress.setFormat(f"{item.text} (%v / %m)")
        elif isinstance(item, Embedded):
            self.cache.put(item.key, item.index, item.embedding)
            self._update_status()

    def _on_embed_error(self, exc: Exception) -> None:
        self._after_embed = False
        self._last_embed_note = "embedding failed"
        show_error(f"Embedding failed: {exc}")

    def _on_embed_finished(self) -> None:
        self._embed_worker = None
        self.embed_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.progress.setVisible(False)
        self._update_status()
        self.embedding_finished.emit()
        if self._after_embed:
            self._after_embed = False
            self.request_preview()

    @property
    def embedding_running(self) -> bool:
        return self._embed_worker is not None

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
        embedding = self.cache.get(key, index)
        predictor = self.models.cached()
        if embedding is None or predictor is None:
            self._embed([index], decode_after=True)
            return
        self._requested = self._generation
        self.decoder.submit(
            DecodeJob(self._generation, predictor, embedding, tuple(prompts), index)
        )

    def _on_decoded(self, result: DecodeResult) -> None:
        job = result.job
        if job.generation < self._valid_from or job.generation <= self._applied:
            return
        self._applied = job.generation
        self.controller.show_preview(result.prediction.masks, job.index)
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
        try:
            ids = self.controller.commit(self.refine_spin.value() or self.label_spin.value())
        except ValueError as exc:
            show_error(str(exc))
            return []
        if not ids:
            show_warning("Nothing to commit: add a point or a box first.")
            return []
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

    def propagate(self) -> None:
        if not self._volume:
            show_warning(_PROPAGATION_MISSING)
            return
        show_warning("Segmenting through the stack is not wired into this widget yet.")

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
            done = self.cache.indices(key)
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
        self.status.setText(
            f"{embedded}{note}\nmodel: {model}{loaded}\nembeddings: in memory\n"
            f"weights cache: {cache_dir()}"
        )
