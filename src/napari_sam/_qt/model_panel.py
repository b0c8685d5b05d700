"""The "Image and model" section of :class:`~napari_sam._qt.widget.SamWidget`.

Its pickers (image layer, model, device, precision), where embeddings are kept (a cache
folder, or a store opened by the user), Embed / Cancel with a progress bar, and the status
line; choosing a model. Running the embedding is
:class:`~napari_sam._qt.embedding_control.EmbeddingControl`.
"""

from __future__ import annotations

from pathlib import Path

from napari.layers import Image
from qtpy.QtCore import Qt, QTimer
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
from napari_sam.model_choice import ModelChoice, describe, file_choice, registry_choices

FROM_FILE = "from file..."
DEVICES = ("auto", "cuda", "mps", "cpu")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
IN_MEMORY = "in memory only"


class ModelPanel:
    """Mixin of :class:`~napari_sam._qt.widget.SamWidget`: builds the model section and
    follows its pickers. Uses the widget's ``models`` (a
    :class:`~napari_sam.model_choice.ModelHolder`), ``controller`` and ``_folder``."""

    def _build_model_box(self, viewer) -> QGroupBox:
        """The "Image and model" group box (its widgets become attributes of the widget)."""
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
        return model_box

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
