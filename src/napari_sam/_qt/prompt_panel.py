"""The "Prompts and objects" section of :class:`~napari_sam._qt.widget.SamWidget`:
negative-point toggle, output layer, label id, refine, zoom, mask choice, Clear / Commit (the rows of
segmenting through the stack are added by
:class:`~napari_sam._qt.stack_propagation.StackPropagation`).
"""

from __future__ import annotations

from napari.layers import Labels
from napari.utils.notifications import show_error
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


class PromptPanel:
    """Mixin of :class:`~napari_sam._qt.widget.SamWidget`: builds the prompt section and
    follows its controls (through the widget's ``controller``)."""

    def _build_prompt_box(self, viewer) -> QGroupBox:
        """The "Prompts and objects" group box (its widgets become attributes of the
        widget)."""
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
        form.addRow("mask", self.multimask_combo)
        self.clear_button = QPushButton("Clear (Shift+C)")
        self.clear_button.clicked.connect(self.clear)
        self.commit_button = QPushButton("Commit (C)")
        self.commit_button.clicked.connect(self.commit)
        row = QHBoxLayout()
        row.addWidget(self.clear_button)
        row.addWidget(self.commit_button)
        form.addRow(row)
        self._add_propagation_rows(form)
        return prompt_box

    def _is_output_candidate(self, layer) -> bool:
        return layer is not self.controller.preview

    def _on_output(self, layer) -> None:
        if layer is not None:
            self.controller.output = layer

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
