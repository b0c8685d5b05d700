"""The "Image and model" section of the Segment Anything widget: its pickers (image layer,
model, device, precision), where embeddings are kept (a cache folder, or a store opened by
the user), Embed / Cancel with a progress bar, and the status line.

:class:`ModelSection` is one part of :class:`~napari_sam._qt.widget.SamWidget`, built from
explicit dependencies: the viewer, the :class:`~napari_sam.model_choice.ModelHolder`, the
:class:`~napari_sam.layer_binding.LayerBinding` (the image in use), the
:class:`~napari_sam.layer_embeddings.LayerEmbeddings` and the
:class:`~napari_sam.jobs.Scheduler`. Embedding runs there as an ``embed`` job.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from napari.layers import Image
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
)

from napari_sam._qt.layer_combo import LayerCombo
from napari_sam._qt.workers import Embedded, Notice, Progress, start_embedding
from napari_sam.jobs import EXCLUSIVE, Busy, Job, Scheduler
from napari_sam.layer_binding import LayerBinding
from napari_sam.layer_embeddings import LayerEmbeddings, StackRequest, StoreRefused
from napari_sam.model_choice import (
    ModelChoice,
    ModelHolder,
    describe,
    file_choice,
    registry_choices,
)
from napari_sam.napari_layers import spatial_shape

FROM_FILE = "from file..."
DEVICES = ("auto", "cuda", "mps", "cpu")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
IN_MEMORY = "in memory only"


class ModelSection(QGroupBox):
    """Model choice, embeddings and their status for the image of ``binding``."""

    #: the image layer picked (after the viewer's own layer events have run)
    image_chosen = Signal(object)
    #: the model, device or precision changed
    model_changed = Signal()
    #: an embedding worker has finished (completed, cancelled or failed)
    embedding_finished = Signal()

    def __init__(
        self,
        viewer,
        models: ModelHolder,
        binding: LayerBinding,
        embeddings: LayerEmbeddings,
        jobs: Scheduler,
        check_image: Callable[[], Image | None],
    ) -> None:
        """``check_image()``: the image in use with its prompt layers in place, or None
        after telling the user what is missing."""
        super().__init__("Image and model")
        self._viewer, self.models, self.binding = viewer, models, binding
        self._check_image = check_image
        self.embeddings, self.jobs = embeddings, jobs
        self._folder: Path | None = None  # keep a store per image there (None: in memory)
        self._store: tuple[Image, Path] | None = None  # a store the user opened, per image
        self._store_before: tuple[Image, Path] | None = None  # restored if it is refused
        self._opening_store = False
        self._worker = None
        self._job: Job | None = None
        self._then: Callable[[], None] | None = None  # after the running embedding
        self._waiting: Callable[[], None] | None = None  # after another job's end
        self._note = ""
        self._build(viewer)
        jobs.on_finish(self._on_job_finished)

    # ------------------------------------------------------------------ layout

    def _build(self, viewer) -> None:
        form = QFormLayout(self)
        self.image_combo = LayerCombo(viewer, Image)
        self.image_combo.setToolTip("The image to segment (its displayed 2D slice)")
        # layers are made outside the viewer's own layer events (later in the event loop)
        self._image_timer = QTimer(self)
        self._image_timer.setSingleShot(True)
        self._image_timer.setInterval(0)
        self._image_timer.timeout.connect(
            lambda: self.image_chosen.emit(self.image_combo.layer())
        )
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
        self.device_combo.currentIndexChanged.connect(self.apply_model_choice)
        self.precision_combo.currentIndexChanged.connect(self.apply_model_choice)
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

    # ------------------------------------------------------------------ model choice

    def add_model(self, choice: ModelChoice, select: bool = True) -> None:
        """Add an entry to the model picker (before "from file...") and select it."""
        at = self.model_combo.count() - 1
        self.model_combo.insertItem(at, choice.label, choice)
        if select:
            self.model_combo.setCurrentIndex(at)

    def chosen(self) -> ModelChoice | None:
        """The model picker's entry in use."""
        return self.model_combo.itemData(self._model_index)

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
        self.apply_model_choice()

    def follow_image(self) -> None:
        """Take up the image picker's layer (after the viewer's own events have run)."""
        self._image_timer.start()

    def apply_model_choice(self, _=None) -> None:
        """Select the model, device and precision of the pickers."""
        choice = self.chosen()
        if choice is None:
            return
        device = self.device_combo.currentText()
        precision = self.precision_combo.currentText()
        if self.models.choose(choice, device, precision):
            self.model_changed.emit()
            self.update_status()

    # ------------------------------------------------------------------ where embeddings live

    def set_cache_folder(self, folder: str | Path | None) -> None:
        """Keep embeddings in a zarr store per image and model under ``folder`` (reused in
        later sessions), or in memory only (None)."""
        folder = Path(folder).expanduser() if folder else None
        if folder == self._folder:
            return
        self._folder = folder
        self.folder_edit.setText(str(folder) if folder else "")
        self.update_status()

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
        if self._worker is not None:
            show_warning("An embedding is running: cancel it or wait, then open the store.")
            return
        try:
            self.jobs.check("embed")
        except Busy as exc:
            show_warning(f"Cannot open the embeddings now: {exc}")
            return
        self._store_before = self._store
        self._store = (image, Path(path))
        self._opening_store = True
        self.embed([])

    def _opened_store(self) -> None:
        image = self.binding.image
        stack = self.embeddings.current(self.cache_key()) if image is not None else None
        if stack is None:
            return
        done = len(self.embeddings.indices(self.cache_key()))
        show_info(f"Opened the embeddings {stack.store.path}: {done} of "
                  f"{stack.source.n_slices} slice(s) stored.")  # fmt: skip

    # ------------------------------------------------------------------ what to embed

    def cache_key(self) -> tuple:
        """Identifies the embeddings the displayed image needs: image, data, model, and
        either the store the user opened for it or the contrast limits and cache folder."""
        image = self.binding.image
        base = (id(image), id(image.data), self.models.wanted)
        if self._store is not None and self._store[0] is image:
            return (*base, "store", str(self._store[1]))
        limits = tuple(float(x) for x in image.contrast_limits)
        return (*base, limits, str(self._folder) if self._folder else None)

    def request(self) -> StackRequest:
        """What to open for the current image (GUI thread)."""
        image = self.binding.image
        store = self._store[1] if self._store is not None and self._store[0] is image else None
        return StackRequest(
            key=self.cache_key(), data=image.data[0] if image.multiscale else image.data,
            rgb=bool(image.rgb), contrast_limits=tuple(float(x) for x in image.contrast_limits),
            name=image.name, folder=self._folder, store=store,
        )  # fmt: skip

    # ------------------------------------------------------------------ embedding

    def embed_all(self) -> None:
        """Embed the displayed slice, then (for a stack) every other slice not cached."""
        image = self._check_image()
        if image is None:
            return
        try:
            index = self.binding.slice_index()
        except ValueError as exc:
            show_error(str(exc))
            return
        lead = spatial_shape(image)[:-2]
        done = set(self.embeddings.indices(self.cache_key()))
        order = [index] + [tuple(int(i) for i in ix) for ix in np.ndindex(*lead) if ix != index]
        todo = [ix for ix in order if ix not in done]
        if not todo:
            show_info("Already embedded.")
            return
        self.embed(todo)

    def embed(self, indices: Sequence[tuple[int, ...]],
              then: Callable[[], None] | None = None) -> None:  # fmt: skip
        """Embed the slices ``indices`` (leading indices) on a worker, then call ``then``
        (a prompt waiting for its slice). While another encoder job runs, ``then`` waits for
        its end instead (it may embed the slice itself); without ``then`` the user is told."""
        if then is not None:
            self._then = then
        if self._worker is not None:
            return
        try:
            job = self.jobs.start("embed")
        except Busy as exc:
            self._then = None
            if then is not None:
                self._waiting = then
                self._note = f"preview waits: {exc}"
                self.update_status()
            else:
                show_warning(str(exc))
            return
        self._job = job
        try:
            worker = start_embedding(self.models.predictor, self.embeddings, self.request(),
                                     list(indices), job.token)  # fmt: skip
        except BaseException:
            self._job = None
            self.jobs.finish(job)
            raise
        worker.yielded.connect(self._on_step)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self.embed_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setRange(0, len(indices) + 1)
        self.progress.setValue(0)
        self.progress.setVisible(True)
        self._note = ""
        worker.start()

    def cancel_embedding(self) -> None:
        """Stop the running embedding (within one encoder block); embedded slices stay.
        Only the embedding stops."""
        if self._worker is None:
            return
        self._then = None
        self._job.cancel()
        self._worker.quit()
        self._note = "embedding cancelled"

    @property
    def embedding_running(self) -> bool:
        return self._worker is not None

    def _on_step(self, item) -> None:
        if isinstance(item, Progress):
            self.progress.setValue(item.done)
            self.progress.setFormat(f"{item.text} (%v / %m)")
        elif isinstance(item, Embedded):
            self.update_status()
        elif isinstance(item, Notice):
            self._note = "model moved to the CPU (accelerator out of memory)"
            show_warning(item.text)

    def _on_error(self, exc: Exception) -> None:
        self._then = None
        exc = getattr(exc, "original", exc)  # WorkFailed: the error raised in the worker
        if isinstance(exc, StoreRefused) and self._opening_store:
            self._opening_store = False
            self._store = self._store_before  # as before: nothing changed
            show_error(f"Embeddings not opened: {exc}")
            return
        if isinstance(exc, StoreRefused):  # the opened store does not fit the new model
            self._store = None
            self.update_status()
            show_error(f"The opened embeddings no longer fit: {exc}. Embeddings are now "
                       "computed as for any image.")  # fmt: skip
            return
        self._note = "embedding failed"
        show_error(f"Embedding failed: {exc}")

    def _on_finished(self) -> None:
        self._worker = None
        job, self._job = self._job, None
        self.jobs.finish(job)  # first: nothing below may keep the job registered
        if self._opening_store:
            self._opening_store = False
            self._opened_store()
        self.embed_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.progress.setVisible(False)
        self.update_status()
        self.embedding_finished.emit()
        then, self._then = self._then, None
        if then is not None:
            then()

    def _on_job_finished(self, job: Job) -> None:
        """A prompt that waited for another encoder job (propagation, automatic) runs now."""
        if self._waiting is not None and job.kind in EXCLUSIVE:
            waiting, self._waiting = self._waiting, None
            self._note = ""
            self.update_status()
            waiting()

    # ------------------------------------------------------------------ status

    def update_status(self) -> None:
        from napari_sam.model.download import cache_dir

        wanted = self.models.wanted
        model = "no model" if wanted is None else f"{wanted[0].source or wanted[0].label}"
        if wanted is not None:
            model += f" on {wanted[1]} ({wanted[2]})"
        loaded = " (loaded)" if self.models.cached() is not None else ""
        if self.models.adapted:
            loaded = " (adapted to your objects)"
        image = self.binding.image
        if image is None:
            embedded = "no image layer"
        else:
            done = self.embeddings.indices(self.cache_key())
            lead = spatial_shape(image)[:-2]
            if not lead:
                embedded = "image embedded" if done else "image not embedded yet"
            else:
                total = int(np.prod(lead))
                shown = ", ".join(",".join(map(str, ix)) for ix in done[:8])
                more = " ..." if len(done) > 8 else ""
                embedded = f"{len(done)} / {total} slices embedded" + (
                    f" ({shown}{more})" if done else ""
                )
        note = f" - {self._note}" if self._note else ""
        if image is not None and self._store is not None and self._store[0] is image:
            where = f"{self._store[1]} (opened)"
        else:
            where = f"store per image in {self._folder}" if self._folder else IN_MEMORY
        self.status.setText(
            f"{embedded}{note}\nmodel: {model}{loaded}\nembeddings: {where}\n"
            f"weights cache: {cache_dir()}"
        )
