"""The Segment Anything dock widget: pickers, embedding, live preview, commit.

Layout: the model section (image layer, model, device, precision, where embeddings are
kept, Embed / Cancel with a progress bar, a status line), then the prompt section
(negative-point toggle, label id, output layer, refine, Clear / Commit, segment through the
stack along a chosen axis, with its own progress bar and Cancel). Logic on layers lives in
:class:`~napari_sam._qt.controller.SegmentController`; embeddings in
:class:`~napari_sam._qt.stack_session.EmbeddingSession` (one store per image and model, shared
by 2D, stacks, tiles, propagation and the Automatic tab); slow work runs on workers
(:mod:`napari_sam._qt.workers`). Keys on the prompt layers: ``C`` commit, ``Shift-C``
clear, ``N`` toggle negative points, ``Shift-S`` segment through the stack.
"""

from __future__ import annotations

import threading
from pathlib import Path
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
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from napari_sam._qt.auto_panel import AutoPanel
from napari_sam._qt.controller import SegmentController, spatial_shape
from napari_sam._qt.layer_combo import LayerCombo
from napari_sam._qt.models import (
    ModelChoice,
    ModelHolder,
    describe,
    file_choice,
    registry_choices,
)
from napari_sam._qt.stack_session import EmbeddingSession, OneSlice, StackRequest, StoreRefused
from napari_sam._qt.through_stack import annotations_along, summary
from napari_sam._qt.workers import (
    DecodeJob,
    DecodeResult,
    Embedded,
    LiveDecoder,
    Notice,
    Progress,
    start_embedding,
    start_propagation,
)

if TYPE_CHECKING:
    import napari

    from napari_sam.predictor import Predictor

FROM_FILE = "from file..."
DEVICES = ("auto", "cuda", "mps", "cpu")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
IN_MEMORY = "in memory only"


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

    def embeddings_opener(self, index: tuple[int, ...] | None = None):
        """(GUI thread) A function ``predictor -> embeddings`` to call on a worker: the
        widget's :class:`~napari_sam.stack.StackEmbeddings` of the chosen image (slice
        ``index`` only when given, as a one-slice stack), so panels embed nothing twice.
        None when no image is chosen."""
        widget = self._widget
        if widget.controller.image is None or widget.controller.image is not self.image_layer():
            return None
        request, session = widget._request(), widget.embeddings

        def open_(predictor):
            stack = session.stack_for(request, predictor)
            return OneSlice(stack, index) if index is not None else stack

        return open_


class SamWidget(QWidget):
    """Dock widget of the plugin; holds the viewer it was opened in."""

    #: emitted after the preview layer shows a new decode (the benchmark and tests wait on it)
    preview_updated = Signal()
    #: emitted when an embedding worker has finished (completed, cancelled or failed)
    embedding_finished = Signal()
    #: emitted with the label id after propagation wrote an object into the output
    propagated = Signal(int)
    #: emitted when a propagation worker has finished (completed, cancelled or failed)
    propagation_finished = Signal()

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
        self.embeddings = EmbeddingSession()
        self._folder: Path | None = None  # keep a store per image there (None: in memory)
        self._store: tuple[Image, Path] | None = None  # a store the user opened, per image
        self._store_before: tuple[Image, Path] | None = None  # restored if it is refused
        self._opening_store = False
        self._propagation = None  # the running propagation worker
        self._propagation_cancel = threading.Event()
        self._axis_followed = True  # the axis picker follows the slider last moved
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
        napari_viewer.dims.events.last_used.connect(self._on_last_used)
        self.destroyed.connect(
            _disconnector(napari_viewer.dims.events.last_used, self._on_last_used)
        )
        self._image_timer.start()

    def idle(self) -> bool:
        """True when no embedding, decode or propagation is running or queued."""
        return (
            not self.decoder.busy
            and self._embed_worker is None
            and self._propagation is None
        )

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
        self.folder_edit = QLineEdit()
        self.folder_edit.setPlaceholderText(IN_MEMORY)
        self.folder_edit.setToolTip("Cache folder: keep one embedding store per image and model "
                                    "there, reused in later sessions (empty: in memory only)")  # fmt: skip
        self.folder_edit.editingFinished.connect(
            lambda: self.set_cache_folder(self.folder_edit.text().strip() or None)
        )
        self.folder_button = QPushButton("Folder...")
        self.folder_button.clicked.connect(self._choose_folder)
        self.open_store_button = QPushButton("Open embeddings...")
        self.open_store_button.setToolTip("Open a store made by `napari-sam embed IMAGE --out "
                                          "STORE.zarr` for the chosen image")  # fmt: skip
        self.open_store_button.clicked.connect(self._choose_store)
        row = QHBoxLayout()
        row.addWidget(self.folder_edit, 1)
        row.addWidget(self.folder_button)
        form.addRow("cache", row)
        form.addRow(self.open_store_button)
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
        self.propagate_button.setEnabled(False)
        self.propagate_button.setToolTip("Follow the prompted object slice by slice along the "
                                         "axis below (from the prompts on this slice and any "
                                         "other slice of that axis) into the output layer")  # fmt: skip
        self.propagate_button.clicked.connect(self.propagate)
        self.axis_combo = QComboBox()
        self.axis_combo.setToolTip("The stack axis to follow the object along (follows the "
                                   "slider you move last)")  # fmt: skip
        self.axis_combo.activated.connect(self._on_axis_picked)
        row = QHBoxLayout()
        row.addWidget(self.propagate_button, 1)
        row.addWidget(QLabel("along"))
        row.addWidget(self.axis_combo)
        form.addRow(row)
        self.propagate_progress = QProgressBar()
        self.propagate_progress.setVisible(False)
        self.propagate_cancel_button = QPushButton("Cancel")
        self.propagate_cancel_button.setVisible(False)
        self.propagate_cancel_button.clicked.connect(self.cancel_propagation)
        row = QHBoxLayout()
        row.addWidget(self.propagate_progress, 1)
        row.addWidget(self.propagate_cancel_button)
        form.addRow(row)
        layout.addWidget(prompt_box)
        layout.addStretch(1)

        self.tabs = QTabWidget()
        self.tabs.addTab(interactive, "Interactive")
        self.auto_panel = AutoPanel(viewer, self.engine)
        self.tabs.addTab(self.auto_panel, "Automatic")
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
        self._fill_axes(image)
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

    # ------------------------------------------------------------------ where embeddings live

    def set_cache_folder(self, folder: str | Path | None) -> None:
        """Keep embeddings in a zarr store per image and model under ``folder`` (reused in
        later sessions), or in memory only (None)."""
        folder = Path(folder).expanduser() if folder else None
        if folder == self._folder:
            return
        self._folder = folder
        self.folder_edit.setText(str(folder) if folder else "")
        self._update_status()

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Cache folder for embeddings",
                                                  str(self._folder or ""))  # fmt: skip
        if folder:
            self.set_cache_folder(folder)

    def _choose_store(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open embeddings (a .zarr store made "
                                                "by napari-sam embed)")  # fmt: skip
        if path:
            self.open_embeddings(path)

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

    def _check_image(self) -> Image | None:
        image = self.controller.image
        if image is None:
            others = [f"{lay.name!r} ({type(lay).__name__})" for lay in self._viewer.layers]
            found = f"; the viewer has {', '.join(others)}, not an image" if others else ""
            show_error(f"Segment Anything needs an Image layer: open or choose one{found}.")
            return None
        if not self.controller.layers_present():
            self._on_image(image)  # remade prompt layers get their keys and live preview
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
        self._cancel = threading.Event()
        worker = start_embedding(
            self.models.predictor, self.embeddings, self._request(), list(indices), self._cancel
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
        self._cancel.set()
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
        stack = self.embeddings.current(key)
        predictor = self.models.cached()
        if stack is None or predictor is None or not self.embeddings.done(key, index):
            self._embed([index], decode_after=True)
            return
        self._requested = self._generation
        flat = stack.source.slice_index(index) if index else 0
        self.decoder.submit(
            DecodeJob(self._generation, predictor, stack, tuple(prompts), index, flat)
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

    # ------------------------------------------------------------------ through the stack

    def _fill_axes(self, image) -> None:
        """The axis picker lists the image's leading (non-plane) axes by the viewer's labels
        (napari's numbered defaults read as ..., t, z) and selects the slider in use."""
        self.axis_combo.clear()
        lead = len(spatial_shape(image)) - 2 if image is not None else 0
        offset = self._viewer.dims.ndim - (lead + 2)
        labels = self._viewer.dims.axis_labels
        default = [f"axis {i}" for i in range(max(lead - 2, 0))] + ["t", "z"][-lead:]
        for axis in range(lead):
            label = str(labels[axis + offset]) if 0 <= axis + offset < len(labels) else ""
            numbered = label.lstrip("-").isdigit()  # napari's defaults: "0".. or "-3"..
            name = label if label and not numbered else default[axis]
            self.axis_combo.addItem(name, axis)
        if lead:
            self.axis_combo.setCurrentIndex(lead - 1)
            self._on_last_used()
        self.axis_combo.setEnabled(lead > 1)
        self.propagate_button.setEnabled(lead > 0)

    def _on_last_used(self, _event=None) -> None:
        """Follow the slider the user moved (a leading axis of the image) unless an axis was
        picked by hand."""
        if not self._axis_followed or self.axis_combo.count() == 0:
            return
        offset = self._viewer.dims.ndim - (self.axis_combo.count() + 2)
        axis = self._viewer.dims.last_used - offset
        if 0 <= axis < self.axis_combo.count():
            self.axis_combo.setCurrentIndex(axis)

    def _on_axis_picked(self, _index: int) -> None:
        self._axis_followed = False

    def propagate(self) -> None:
        """Follow the prompted object through the stack along the chosen axis, on a worker
        (progress, Cancel); the object goes into the output layer on every slice it reached
        as one undo step, with the chosen label id (or the next free one)."""
        image = self._check_image()
        if image is None:
            return
        if self._propagation is not None:
            show_warning("Already segmenting through the stack: wait or cancel it.")
            return
        lead_shape = spatial_shape(image)[:-2]
        if not lead_shape:
            show_warning("Segmenting through a stack needs a stack (a 3D or 4D image).")
            return
        c = self.controller
        try:
            index = c.slice_index()
            axis = int(self.axis_combo.currentData())
            refine = self.refine_spin.value()
            annotations, slices = annotations_along(
                lambda ix: c.prompts(ix, refine if ix == index else 0), lead_shape, axis, index
            )
            if c.output is None or c.output not in self._viewer.layers:
                raise ValueError("choose an output labels layer first")
        except ValueError as exc:
            show_error(f"Cannot segment through the stack: {exc}")
            return
        from napari_sam.volume import PropagationConfig, is_stop

        if all(is_stop(p) for p in annotations.values()):
            show_error("Cannot segment through the stack: only negative points; add a "
                       "positive point or a box on the object.")  # fmt: skip
            return
        self._propagation_cancel = cancel = threading.Event()
        worker = start_propagation(self.models.predictor, self.embeddings, self._request(),
                                   annotations, slices, PropagationConfig(), cancel)  # fmt: skip
        negatives = [p for p, prompt in annotations.items() if is_stop(prompt)]
        job = (c.output, index, axis, self.axis_combo.currentText(), lead_shape[axis], negatives)
        worker.yielded.connect(self._on_propagate_step)
        worker.returned.connect(lambda result: self._on_propagated(result, *job))
        worker.errored.connect(lambda exc: show_error(f"Segmenting through the stack "
                                                      f"failed: {exc}"))  # fmt: skip
        worker.finished.connect(self._on_propagation_finished)
        self._propagation = worker
        self.propagate_button.setEnabled(False)
        self.propagate_progress.setRange(0, 0)
        self.propagate_progress.setFormat("loading the model")
        self.propagate_progress.setVisible(True)
        self.propagate_cancel_button.setVisible(True)
        worker.start()

    def cancel_propagation(self) -> None:
        """Stop the running propagation; the output layer is left as it was."""
        if self._propagation is None:
            return
        self._propagation_cancel.set()
        self._propagation.quit()

    @property
    def propagation_running(self) -> bool:
        return self._propagation is not None

    def _on_propagate_step(self, item: Progress) -> None:
        self.propagate_progress.setRange(0, item.total)
        self.propagate_progress.setValue(item.done)
        self.propagate_progress.setFormat(f"{item.text} (%v / %m)")
        self._update_status()

    def _on_propagated(self, result, output, index, axis, axis_name, n, negatives) -> None:
        if result is None or self._propagation_cancel.is_set():
            return  # cancelled: said when the worker finishes
        c = self.controller
        if output is not c.output or output not in self._viewer.layers:
            show_error("The output layer changed while segmenting through the stack; "
                       "nothing was written.")  # fmt: skip
            return
        label_id = self.refine_spin.value() or self.label_spin.value() or c.next_free_id()
        planes = []
        for position, mask in zip(result.positions, result.masks):
            where = list(index)
            where[axis] = position
            planes.append((tuple(where), mask))
        try:
            c.write_object(planes, label_id)
        except ValueError as exc:
            show_error(f"Nothing written: {exc}")
            return
        self._valid_from = self._generation = self._generation + 1
        self.decoder.drop_pending()
        c.clear_prompts()
        self.label_spin.setValue(0)
        self.refine_spin.setValue(0)
        show_info(summary(result, label_id, axis_name, n, negatives))
        self.propagated.emit(label_id)

    def _on_propagation_finished(self) -> None:
        if self._propagation_cancel.is_set():
            show_info("Segmenting through the stack was cancelled; nothing was written.")
        self._propagation = None
        self.propagate_progress.setVisible(False)
        self.propagate_cancel_button.setVisible(False)
        self.propagate_button.setEnabled(self.axis_combo.count() > 0)
        self._update_status()
        self.propagation_finished.emit()

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
