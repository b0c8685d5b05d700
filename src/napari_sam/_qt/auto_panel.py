"""The "Segment everything" panel: mode, settings, Run / Cancel with progress, result as Labels.

The mode (APG, AIS, AMG, or the best the model has) runs with the model's own settings; the
grid settings (AMG) are shown when AMG is chosen.

Runs against an :class:`~napari_sam.panel_contract.Engine`; when the engine offers
``embeddings_opener`` (the Segment Anything widget does), its embeddings are reused. The form
is built from :class:`~napari_sam.automatic.AutoMaskConfig`'s fields (one spin box
each, range and help from the field metadata) and a preset picker; nothing here lists the
parameters by hand. The work is :func:`~napari_sam.automatic.segment_everything_steps` on a
napari ``thread_worker``; Cancel stops it between two steps and leaves the layers untouched.
"""

from __future__ import annotations

from dataclasses import fields
from typing import TYPE_CHECKING

import numpy as np
from napari.utils.notifications import show_warning
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_sam._qt.workers import WorkFailed
from napari_sam.automatic.config import (
    PRESETS,
    AutoMaskConfig,
    auto_config,
    default_mode,
    mode_of,
)
from napari_sam.jobs import Busy, Cancelled, Job, cancellable
from napari_sam.napari_layers import current_index, spatial_shape

if TYPE_CHECKING:
    import napari

    from napari_sam.panel_contract import Engine


#: the mode choices, in the order shown
_MODE_NAMES = {
    "best": "Best for the model",
    "apg": "APG: prompts from the decoder",
    "ais": "AIS: decoder + watershed",
    "amg": "AMG: grid of points",
}


def _label(name: str) -> str:
    return name.replace("_", " ").replace("thresh", "threshold").capitalize()


class AutoPanel(QWidget):
    """Automatic instance segmentation of the engine's image layer into a new Labels layer.

    ``finished(layer or None)`` is emitted when a run ends (None when cancelled or failed).
    """

    finished = Signal(object)

    def __init__(self, viewer: napari.Viewer, engine: Engine, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer, self.engine = viewer, engine
        self.worker = None
        self.job: Job | None = None  # the running segmentation's own job (cancel token)
        self._scheduler = None
        layout = QVBoxLayout(self)
        self.mode = QComboBox()
        for key, text in _MODE_NAMES.items():
            self.mode.addItem(text, key)
        self.mode.setToolTip("APG: prompts from the model's instance decoder, decoded by SAM; "
                             "AIS: the decoder's maps and a watershed (fastest); AMG: SAM's "
                             "grid of points. Best: APG when the model has a decoder, else "
                             "AMG")  # fmt: skip
        self.mode.currentIndexChanged.connect(self._show_mode)
        top = QFormLayout()
        top.addRow("Mode", self.mode)
        layout.addLayout(top)
        # SAM's grid settings (AMG): shown when the mode is AMG
        self.amg_settings = QWidget()
        self.preset = QComboBox()
        self.preset.addItems(list(PRESETS))
        self.preset.currentTextChanged.connect(lambda name: self.set_config(PRESETS[name]))
        form = QFormLayout(self.amg_settings)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("Preset", self.preset)
        self.inputs: dict[str, QSpinBox | QDoubleSpinBox] = {}
        for f in fields(AutoMaskConfig):
            low, high = f.metadata["range"]
            box = QSpinBox() if type(f.default) is int else QDoubleSpinBox()
            if isinstance(box, QDoubleSpinBox):
                box.setDecimals(3)
            box.setRange(low, high)
            box.setSingleStep(f.metadata["step"])
            box.setToolTip(f.metadata["help"])
            form.addRow(_label(f.name), box)
            self.inputs[f.name] = box
        layout.addWidget(self.amg_settings)
        self.whole_stack = QCheckBox("All slices (3D objects)")
        self.whole_stack.setToolTip("Segment every slice and link objects through the stack; "
                                    "unchecked: only the displayed slice")  # fmt: skip
        layout.addWidget(self.whole_stack)
        buttons = QHBoxLayout()
        self.run_button = QPushButton("Segment everything")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout.addLayout(buttons)
        self.progress = QProgressBar()
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        self.set_config(PRESETS[self.preset.currentText()])
        self._show_mode()

    # ------------------------------------------------------------------ settings

    def chosen_mode(self) -> str:
        """The mode chosen: "best", "apg", "ais" or "amg"."""
        return self.mode.currentData()

    def set_mode(self, mode: str) -> None:
        """Choose ``mode`` ("best", "apg", "ais" or "amg")."""
        self.mode.setCurrentIndex(list(_MODE_NAMES).index(mode))

    def _show_mode(self) -> None:
        self.amg_settings.setVisible(self.chosen_mode() == "amg")

    def config(self) -> AutoMaskConfig:
        """The settings shown in the form (values not edited keep their full precision:
        the preset's 512 / 1500 stays exact although the box shows 0.341)."""
        changes = {}
        for name, box in self.inputs.items():
            shown = box.value()
            if shown != box.valueFromText(box.textFromValue(getattr(self._base, name))):
                changes[name] = shown
        return self._base.with_values(**changes)

    def set_config(self, config: AutoMaskConfig) -> None:
        """Show ``config`` in the form."""
        self._base = config
        for name, box in self.inputs.items():
            box.setValue(getattr(config, name))

    # ------------------------------------------------------------------ running

    def run(self) -> None:
        """Start segmenting the chosen image (the displayed slice, or all slices)."""
        from napari.qt.threading import thread_worker

        from napari_sam.automatic import segment_everything_steps

        layer = self.engine.image_layer()
        if layer is None:
            self.status.setText("Choose an image layer first.")
            return
        data = layer.data[0] if layer.multiscale else layer.data
        lead = len(spatial_shape(layer)) - 2
        index: tuple[int, ...] = ()
        if lead > 0 and not self.whole_stack.isChecked():
            try:  # the displayed slice in the layer's own data coordinates
                index = current_index(layer, self.viewer)
            except ValueError as exc:
                self.status.setText(str(exc))
                return
            data = data[index]
        grid_config, chosen, engine = self.config(), self.chosen_mode(), self.engine
        scheduler = getattr(engine, "scheduler", None)
        try:
            job = scheduler.start("auto") if scheduler is not None else Job("auto")
        except Busy as exc:
            self.status.setText(str(exc))
            return
        self.job, self._scheduler = job, scheduler
        limits = tuple(float(v) for v in layer.contrast_limits)
        rgb = bool(layer.rgb)
        # the engine's own embeddings when it shares them (no slice is embedded twice)
        opener = getattr(engine, "embeddings_opener", None)
        opener = opener(index if index else None) if opener is not None else None

        @thread_worker
        def work():
            with cancellable(job.token):
                try:
                    predictor = engine.predictor()
                    mode = default_mode(predictor) if chosen == "best" else chosen
                    config = grid_config if mode == "amg" else auto_config(predictor, mode)
                    embeddings = opener(predictor) if opener is not None else None
                    labels = yield from segment_everything_steps(
                        predictor, data, config, rgb=rgb,
                        contrast_limits=None if rgb else limits, embeddings=embeddings)  # fmt: skip
                except Cancelled:
                    return None
                except RuntimeError as exc:  # superqt drops RuntimeErrors without a signal
                    raise WorkFailed(exc) from exc
            # counted here, not on the GUI thread (a whole stack's labels)
            return labels, int(np.count_nonzero(np.unique(labels))), config

        self.worker = work()
        self.worker.yielded.connect(self._on_progress)
        self.worker.returned.connect(lambda found: self._on_done(layer, found, index))
        self.worker.errored.connect(self._on_error)
        self.worker.aborted.connect(self._on_aborted)
        # a cancel inside the encoder ends the work without returned / aborted: finished is
        # the one signal every run sends, so the job is always handed back
        self.worker.finished.connect(self._on_worker_finished)
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setRange(0, 0)
        self.status.setText("Loading the model...")
        self.worker.start()

    def cancel(self) -> None:
        """Stop the running segmentation (within one encoder block); nothing is added.
        Only this panel's job stops."""
        if self.worker is not None:
            self.status.setText("Cancelling...")
            self.job.cancel()
            self.worker.quit()

    def _on_progress(self, step: tuple[int, int]) -> None:
        done, total = step
        self.progress.setRange(0, total)
        self.progress.setValue(done)
        self.status.setText(f"Segmenting: step {done} of {total}")

    def _on_worker_finished(self) -> None:
        if self.worker is not None:  # no other handler ran: cancelled in the encoder
            self._on_aborted()

    def _idle(self) -> None:
        if self._scheduler is not None and self.job is not None:
            self._scheduler.finish(self.job)
        self.job = None
        self.worker = None
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.progress.setRange(0, 1)
        self.progress.setValue(0)

    def _on_done(self, layer, found, index: tuple[int, ...]) -> None:
        """``found``: (labels, number of objects, settings run) from the worker, None when
        cancelled."""
        if found is None:
            self._on_aborted()
            return
        labels, n, config = found
        mode = mode_of(config)
        if index:
            full = np.zeros(spatial_shape(layer), dtype=np.int32)
            full[index] = labels
            labels = full
        if n == 0:
            self._idle()
            self.status.setText(f"Found no objects ({mode.upper()}).")
            if mode == "amg":
                show_warning(
                    "Segment everything found no object that passes the quality filters "
                    f"(predicted IoU > {config.pred_iou_thresh:g}, stability >= "
                    f"{config.stability_score_thresh:g}); nothing was added. Lower them (or "
                    "choose a stronger model) and run again."
                )
            else:
                show_warning(f"Segment everything ({mode.upper()}) found no object; nothing "
                             "was added. Try another mode, or check the contrast limits.")  # fmt: skip
            self.finished.emit(None)
            return
        added = self.viewer.add_labels(
            labels, name=f"{layer.name} objects", scale=layer.scale[-labels.ndim :],
            translate=layer.translate[-labels.ndim :],
        )  # fmt: skip
        self._idle()
        self.status.setText(f"Found {n} objects ({mode.upper()}).")
        self.finished.emit(added)

    def _on_error(self, exc: BaseException) -> None:
        self._idle()
        self.status.setText(f"Failed: {exc}")
        self.finished.emit(None)

    def _on_aborted(self) -> None:
        self._idle()
        self.status.setText("Cancelled.")
        self.finished.emit(None)
