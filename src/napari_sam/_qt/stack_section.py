"""Segmenting through the stack in the Segment Anything widget: the axis picker (which
follows the slider moved last), the propagation job with its progress bar and Cancel,
writing the object it followed into the output layer, and the slices the evidence doubts:
pick one, go there, re-prompt it, and the correction carries on from there (away from the
slice first prompted).

:class:`StackSection` is one part of :class:`~napari_sam._qt.widget.SamWidget`, built from
explicit dependencies: the viewer, the :class:`~napari_sam.layer_binding.LayerBinding`, the
:class:`~napari_sam.model_choice.ModelHolder`, the
:class:`~napari_sam.layer_embeddings.LayerEmbeddings`, the
:class:`~napari_sam.jobs.Scheduler` (propagation runs as a ``propagate`` job), and the
model and prompt sections it reads its request and choices from.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from napari.layers import Image
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
)

from napari_sam._qt.events import disconnector
from napari_sam._qt.model_section import ModelSection
from napari_sam._qt.prompt_section import PromptSection
from napari_sam._qt.workers import Notice, Progress, start_propagation
from napari_sam.jobs import Busy, Job, Scheduler
from napari_sam.layer_binding import LayerBinding
from napari_sam.layer_embeddings import LayerEmbeddings
from napari_sam.model_choice import ModelHolder
from napari_sam.napari_layers import spatial_shape
from napari_sam.stack_prompting import annotations_along, continuation, summary
from napari_sam.transforms import ObjectMask


class StackSection(QGroupBox):
    """Follow the prompted object along a stack axis into the output layer."""

    #: emitted with the label id after propagation wrote an object into the output
    propagated = Signal(int)
    #: emitted when a propagation worker has finished (completed, cancelled or failed)
    propagation_finished = Signal()

    def __init__(
        self,
        viewer,
        binding: LayerBinding,
        models: ModelHolder,
        embeddings: LayerEmbeddings,
        jobs: Scheduler,
        model_section: ModelSection,
        prompts: PromptSection,
        check_image: Callable[[], Image | None],
    ) -> None:
        super().__init__("Through the stack")
        self._viewer, self.binding, self.models = viewer, binding, models
        self.embeddings, self.jobs = embeddings, jobs
        self.model_section, self.prompts = model_section, prompts
        self._check_image = check_image
        self._propagation = None  # the running propagation worker
        self._propagation_job: Job | None = None
        self._axis_followed = True  # the axis picker follows the slider last moved
        self._queued = False  # Shift-S pressed while an embedding ran: runs when it ends
        self._build()
        jobs.on_finish(self._on_job_finished)
        viewer.dims.events.last_used.connect(self._on_last_used)
        self.destroyed.connect(disconnector(viewer.dims.events.last_used, self._on_last_used))

    def _build(self) -> None:
        form = QFormLayout(self)
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
        self.doubtful_combo = QComboBox()
        self.doubtful_combo.setToolTip("Slices of the last object whose mask the evidence "
                                       "doubts (confidence in brackets), least sure first")  # fmt: skip
        self.doubtful_button = QPushButton("Go to")
        self.doubtful_button.setToolTip("Show this slice and refine the object there: "
                                        "re-prompt it, then Segment through stack carries the "
                                        "correction on from there")  # fmt: skip
        self.doubtful_button.clicked.connect(self.go_to_doubtful)
        self.doubtful_label = QLabel("doubtful")
        row = QHBoxLayout()
        row.addWidget(self.doubtful_label)
        row.addWidget(self.doubtful_combo, 1)
        row.addWidget(self.doubtful_button)
        form.addRow(row)
        self._continued: tuple[int, int, tuple[int, ...], int] | None = None
        self._show_doubtful([])

    def fill_axes(self, image) -> None:
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
        c = self.binding
        try:
            index = c.slice_index()
            axis = int(self.axis_combo.currentData())
            refine = self.prompts.refine_spin.value()
            annotations, slices = annotations_along(
                lambda ix: c.prompts(ix, refine if ix == index else 0), lead_shape, axis, index
            )
            if c.output is None or c.output not in self._viewer.layers:
                raise ValueError("choose an output labels layer first")
        except ValueError as exc:
            show_error(f"Cannot segment through the stack: {exc}")
            return
        from napari_sam.propagation import PropagationConfig, is_stop

        if all(is_stop(p) for p in annotations.values()):
            show_error("Cannot segment through the stack: only negative points; add a "
                       "positive point or a box on the object.")  # fmt: skip
            return
        directions = "both"
        if self._continued is not None and refine == self._continued[0]:
            _, along, at, source = self._continued
            same_line = along == axis and all(a == b for k, (a, b) in enumerate(zip(at, index))
                                              if k != axis)  # fmt: skip
            if same_line:
                directions = continuation(index[axis], source)
        # the mask choice, not a candidate the M key picked for this slice's preview
        config = PropagationConfig(zoom=self.prompts.zoom, directions=directions,
                                   multimask=self.prompts.multimask_combo.currentText())  # fmt: skip
        request = self.model_section.request()
        try:
            job = self.jobs.start("propagate")
        except Busy as exc:
            blocking = self.jobs.blocking("propagate")
            if blocking is not None and blocking.kind == "embed":  # e.g. the first click's
                self._queued = True
                show_info("Segmenting through the stack starts when the embedding ends.")
            else:
                show_warning(f"Cannot segment through the stack now: {exc}")
            return
        self._propagation_job = job
        try:
            worker = start_propagation(self.models.predictor, self.embeddings, request,
                                       annotations, slices, config, job.token)  # fmt: skip
        except BaseException:
            self._propagation_job = None
            self.jobs.finish(job)
            raise
        negatives = [p for p, prompt in annotations.items() if is_stop(prompt)]
        # the label id is the one chosen now: changing the pickers while it runs changes
        # nothing (0: the next free id when the object is written)
        chosen = refine or self.prompts.label_spin.value()
        where = (c.output, index, axis, self.axis_combo.currentText(), lead_shape[axis],
                 negatives, directions, chosen, bool(refine))  # fmt: skip
        worker.yielded.connect(self._on_propagate_step)
        worker.returned.connect(lambda result: self._on_propagated(result, *where))
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
        self._propagation_job.cancel()
        self._propagation.quit()

    def _on_job_finished(self, job: Job) -> None:
        """Run the propagation that waited for an embedding (not when it was cancelled)."""
        if self._queued and job.kind == "embed":
            self._queued = False
            if job.cancelled:
                show_info("The embedding was cancelled: segmenting through the stack did not "
                          "start.")  # fmt: skip
            else:
                self.propagate()

    @property
    def propagation_running(self) -> bool:
        return self._propagation is not None

    def _on_propagate_step(self, item: Progress | Notice) -> None:
        if isinstance(item, Notice):
            show_warning(item.text)
            return
        self.propagate_progress.setRange(0, item.total)
        self.propagate_progress.setValue(item.done)
        self.propagate_progress.setFormat(f"{item.text} (%v / %m)")
        self.model_section.update_status()

    def _on_propagated(self, result, output, index, axis, axis_name, n, negatives,
                       directions="both", chosen=0, refining=False) -> None:  # fmt: skip
        """Write ``result`` (a :class:`~napari_sam.propagation.Propagation`: positions along
        ``axis``, one :class:`~napari_sam.transforms.ObjectMask` of the plane each; None when
        cancelled) into ``output`` as one object. ``index``: the leading-axes index of the
        slice prompted; ``n``: the length of ``axis``; ``negatives``: positions with only
        negative points; ``directions``: "forward" / "backward" when this carries a correction
        on, whose object then also leaves the slices beyond where the correction stopped;
        ``chosen``: the label id picked when it started (0: the next free one now);
        ``refining``: that id was the object to refine, whose old pixels on these slices go
        (else an existing object of that id keeps them and gains the new ones)."""
        if result is None or self._propagation_job.cancelled:
            return  # cancelled: said when the worker finishes
        c = self.binding
        if output is not c.output or output not in self._viewer.layers:
            show_error("The output layer changed while segmenting through the stack; "
                       "nothing was written.")  # fmt: skip
            return
        label_id = chosen or c.next_free_id()
        planes = []
        masks = dict(zip(result.positions, result.masks))
        if directions != "both" and result.positions:
            here = index[axis]
            beyond = range(here + 1, n) if directions == "forward" else range(here - 1, -1, -1)
            empty = ObjectMask(np.zeros((0, 0), bool), (0, 0), result.masks[0].shape)
            masks.update({p: empty for p in beyond if p not in masks})
        for position, mask in sorted(masks.items()):
            where = list(index)
            where[axis] = position
            planes.append((tuple(where), mask))
        try:
            c.write_object(planes, label_id, replace=refining)
        except ValueError as exc:
            show_error(f"Nothing written: {exc}")
            return
        self.prompts.invalidate()
        c.clear_prompts()
        self.prompts.reset_ids()
        show_info(summary(result, label_id, axis_name, n, negatives))
        if self._continued is None or self._continued[0] != label_id:
            self._continued = (label_id, axis, tuple(index), int(min(result.sources or (0,))))
        by_position = dict(zip(result.positions, result.confidence))
        self._show_doubtful([(label_id, axis, tuple(index), p, float(by_position[p]))
                             for p in result.doubtful()])  # fmt: skip
        self.propagated.emit(label_id)

    def _show_doubtful(self, slices: list[tuple[int, int, tuple[int, ...], int, float]]) -> None:
        """List ``(label, axis, index, position, confidence)`` rows; hide the row if none."""
        self.doubtful_combo.clear()
        name = self.axis_combo.currentText() or "slice"
        for label, axis, index, position, conf in slices:
            self.doubtful_combo.addItem(f"{name} {position} ({conf:.2f})",
                                        (label, axis, index, position))  # fmt: skip
        for w in (self.doubtful_label, self.doubtful_combo, self.doubtful_button):
            w.setVisible(bool(slices))

    def go_to_doubtful(self) -> None:
        """Show the chosen doubtful slice and refine its object there (the label id goes
        into "refine"): the next prompt there corrects it, and Segment through stack carries
        the correction on away from the slice first prompted."""
        data = self.doubtful_combo.currentData()
        image = self.binding.image
        if data is None or image is None:
            return
        label, axis, index, position = data
        lead = len(index)
        where = list(index)
        where[axis] = position
        data_point = [*where, 0, 0]
        world = image.data_to_world(data_point)
        offset = self._viewer.dims.ndim - (lead + 2)
        self._viewer.dims.set_point(axis + offset, float(world[axis]))
        self.prompts.refine_spin.setValue(label)

    def _on_propagation_finished(self) -> None:
        job, self._propagation_job = self._propagation_job, None
        self._propagation = None
        self.jobs.finish(job)  # first: nothing below may keep the job registered
        if job.cancelled:
            show_info("Segmenting through the stack was cancelled; nothing was written.")
        self.propagate_progress.setVisible(False)
        self.propagate_cancel_button.setVisible(False)
        self.propagate_button.setEnabled(self.axis_combo.count() > 0)
        self.model_section.update_status()
        self.propagation_finished.emit()

