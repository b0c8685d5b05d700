"""The Segment Anything dock widget: pickers, embedding, live preview, commit.

Layout: the model section (image layer, model, device, precision, where embeddings are
kept, Embed / Cancel with a progress bar, a status line), then the prompt section
(negative-point toggle, label id, output layer, refine, Clear / Commit, segment through the
stack along a chosen axis, with its own progress bar and Cancel). Logic on layers lives in
:class:`~napari_sam.layer_binding.LayerBinding`; embeddings in
:class:`~napari_sam.layer_embeddings.LayerEmbeddings` (one store per image and model, shared
by 2D, stacks, tiles, propagation and the Automatic tab); slow work runs on workers
(:mod:`napari_sam._qt.workers`). Keys on the prompt layers: ``C`` commit, ``Shift-C``
clear, ``N`` toggle negative points, ``Shift-S`` segment through the stack.

:class:`SamWidget` is made of one mixin per concern, each in its own module:
:class:`~napari_sam._qt.model_panel.ModelPanel` (the model section, model choice, cache
folder), :class:`~napari_sam._qt.embedding_control.EmbeddingControl` (embedding workers,
opened stores, the status line), :class:`~napari_sam._qt.prompt_panel.PromptPanel` (the
prompt section), :class:`~napari_sam._qt.live_preview.LivePreview` (decode, preview,
commit, clear) and :class:`~napari_sam._qt.stack_propagation.StackPropagation` (segment
through the stack). This module holds the state they share (set in ``__init__``), the
layout around them and the viewer and layer events.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from napari.layers import Image
from napari.utils.notifications import show_error
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QTabWidget, QVBoxLayout, QWidget

from napari_sam._qt.auto_panel import AutoPanel
from napari_sam._qt.embedding_control import EmbeddingControl
from napari_sam._qt.live_preview import LivePreview
from napari_sam._qt.model_panel import ModelPanel
from napari_sam._qt.prompt_panel import PromptPanel
from napari_sam._qt.stack_propagation import StackPropagation
from napari_sam._qt.workers import LiveDecoder
from napari_sam.jobs import Job, Scheduler
from napari_sam.layer_binding import LayerBinding
from napari_sam.layer_embeddings import LayerEmbeddings, OneSlice
from napari_sam.model_choice import ModelHolder
from napari_sam.napari_layers import spatial_shape

if TYPE_CHECKING:
    import napari

    from napari_sam.predictor import Predictor


def _disconnector(emitter, callback):
    """A function that disconnects ``callback`` (for a widget's ``destroyed`` signal; it
    holds no reference to the widget itself)."""

    def disconnect(*_args):
        emitter.disconnect(callback)

    return disconnect


class WidgetEngine:
    """The :class:`~napari_sam.panel_contract.Engine` of a :class:`SamWidget`: the model and
    image layer chosen in its pickers (for panels such as the automatic segmentation)."""

    def __init__(self, widget: SamWidget) -> None:
        self._widget = widget

    def predictor(self) -> Predictor:
        """Load (on first use; call from a worker thread) and return the chosen model."""
        return self._widget.models.predictor()

    @property
    def scheduler(self) -> Scheduler:
        """The widget's :class:`~napari_sam.jobs.Scheduler`: a panel starts its jobs there,
        so jobs that may not overlap (embedding, propagation, automatic) never do."""
        return self._widget.jobs

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


class SamWidget(ModelPanel, EmbeddingControl, PromptPanel, LivePreview, StackPropagation, QWidget):
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
        self.controller = LayerBinding(napari_viewer)
        self.models = ModelHolder()
        self.engine = WidgetEngine(self)
        self.embeddings = LayerEmbeddings()
        self._folder: Path | None = None  # keep a store per image there (None: in memory)
        self._store: tuple[Image, Path] | None = None  # a store the user opened, per image
        self._store_before: tuple[Image, Path] | None = None  # restored if it is refused
        self._opening_store = False
        self.jobs = Scheduler()  # which background jobs run, each with its own cancel
        self._propagation = None  # the running propagation worker
        self._propagation_job: Job | None = None
        self._axis_followed = True  # the axis picker follows the slider last moved
        self.decoder = LiveDecoder(self)
        self.decoder.decoded.connect(self._on_decoded)
        self.decoder.failed.connect(self._on_decode_failed)
        self._generation = 0  # of the latest preview request
        self._valid_from = 0  # decodes of older requests are dropped (after clear / commit)
        self._applied = -1
        self._requested = -1  # generation of the latest decode submitted
        self._embed_worker = None
        self._embed_job: Job | None = None
        self._after_embed = False
        self._preview_waits = False  # a prompt waits for another job to embed its slice
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
        layout.addWidget(self._build_model_box(viewer))
        layout.addWidget(self._build_prompt_box(viewer))
        layout.addStretch(1)

        self.tabs = QTabWidget()
        self.tabs.addTab(interactive, "Interactive")
        self.auto_panel = AutoPanel(viewer, self.engine)
        self.tabs.addTab(self.auto_panel, "Automatic")
        self.model_combo.currentIndexChanged.connect(self._suggest_auto_preset)
        self._suggest_auto_preset()
        outer.addWidget(self.tabs)
        self._update_status()

    def _suggest_auto_preset(self, _=None) -> None:
        """The Automatic tab starts from the chosen model's own automatic settings (its
        architecture's ``auto_preset``, as the CLI and the Python API): the bundled model's
        predicted IoUs and stability scores run lower than the official models', so the
        official defaults would pass none of its masks. A weights file starts from the
        official defaults."""
        from napari_sam.model.config import get_config
        from napari_sam.model.download import WEIGHTS

        choice = self.model_combo.itemData(self._model_index)
        info = WEIGHTS.get(choice.source) if choice is not None and choice.source else None
        preset = get_config(info.architecture).auto_preset if info is not None else "default"
        self.auto_panel.preset.setCurrentText(preset)

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
        if self.controller.output is not None:  # this image's own output layer
            self.output_combo.set_layer(self.controller.output)
        if self.controller.points is not None and made:
            self._viewer.layers.selection.active = self.controller.points
            self.controller.points.mode = "add"
        self._fill_axes(image)
        self._update_status()

    def _bind_keys(self, layer) -> None:
        layer.bind_key("c", lambda _layer: self.commit(), overwrite=True)
        layer.bind_key("Shift-C", lambda _layer: self.clear(), overwrite=True)
        layer.bind_key("n", lambda _layer: self.negative_button.toggle(), overwrite=True)
        layer.bind_key("Shift-S", lambda _layer: self.propagate(), overwrite=True)

    def _on_contrast(self, _event=None) -> None:
        self._update_status()

    def _on_prompt_data(self, event) -> None:
        action = str(getattr(event, "action", "changed"))
        if action.endswith(("adding", "removing")):
            return
        self.request_preview()

    def _on_slice(self, _event=None) -> None:
        if self.controller.image is not None and len(spatial_shape(self.controller.image)) > 2:
            self.request_preview()
            self._update_status()

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
