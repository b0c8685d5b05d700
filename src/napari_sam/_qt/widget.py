"""The Segment Anything dock widget: the composition of its parts.

Qt-free parts, each built and tested on its own: the
:class:`~napari_sam.model_choice.ModelHolder` (``models``: the chosen model, loaded on a
worker), the :class:`~napari_sam.layer_embeddings.LayerEmbeddings` (``embeddings``: one
store per image and model, shared by 2D, stacks, tiles, propagation and the Automatic tab),
the :class:`~napari_sam.jobs.Scheduler` (``jobs``: which background jobs may overlap, each
with its own cancel) and the :class:`~napari_sam.layer_binding.LayerBinding`
(``binding``: the prompt, preview and output layers of the image in use).

Qt sections, each given the parts it uses: the
:class:`~napari_sam._qt.model_section.ModelSection` (image, model, embeddings, status), the
:class:`~napari_sam._qt.prompt_section.PromptSection` (prompt controls, live preview,
commit), the :class:`~napari_sam._qt.stack_section.StackSection` (segment through the
stack), the :class:`~napari_sam._qt.auto_panel.AutoPanel` (the Automatic tab) and the
:class:`~napari_sam._qt.refine_panel.RefinePanel` (the Refine tab), both through
:class:`WidgetEngine`. This module wires them to each other and to the viewer's events.
Keys on the prompt layers: ``C`` commit, ``Shift-C`` clear, ``N`` toggle negative points,
``M`` the next of SAM's candidate masks, ``Shift-S`` segment through the stack, ``F`` find
objects like the committed ones (the :class:`~napari_sam._qt.learn_panel.LearnPanel`, the
"From my objects" tab, which also adapts the model to them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from napari.layers import Image
from napari.utils.notifications import show_error
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QTabWidget, QVBoxLayout, QWidget

from napari_sam._qt.auto_panel import AutoPanel
from napari_sam._qt.events import disconnector
from napari_sam._qt.learn_panel import LearnPanel
from napari_sam._qt.model_section import ModelSection
from napari_sam._qt.prompt_section import PromptSection
from napari_sam._qt.refine_panel import RefinePanel
from napari_sam._qt.stack_section import StackSection
from napari_sam.jobs import Scheduler
from napari_sam.layer_binding import LayerBinding
from napari_sam.layer_embeddings import LayerEmbeddings, OneSlice
from napari_sam.model_choice import ModelHolder
from napari_sam.napari_layers import spatial_shape

if TYPE_CHECKING:
    import napari

    from napari_sam.predictor import Predictor
    from napari_sam.training.adapt import Adapted


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
        return self._widget.model_section.image_combo.layer()

    def embeddings_opener(self, index: tuple[int, ...] | None = None):
        """(GUI thread) A function ``predictor -> embeddings`` to call on a worker: the
        widget's :class:`~napari_sam.stack_embeddings.StackEmbeddings` of the chosen image (slice
        ``index`` only when given, as a one-slice stack), so panels embed nothing twice.
        None when no image is chosen."""
        widget = self._widget
        if widget.binding.image is None or widget.binding.image is not self.image_layer():
            return None
        request, session = widget.model_section.request(), widget.embeddings

        def open_(predictor):
            stack = session.stack_for(request, predictor)
            return OneSlice(stack, index) if index is not None else stack

        return open_

    def use_adapted(self, adapted: Adapted) -> bool:
        """(GUI thread) Prompts use ``adapted``'s model from now on; False (nothing changed)
        when the model it was adapted from is no longer the one in use."""
        widget = self._widget
        if not widget.models.use_adapted(adapted.base, adapted.predictor):
            return False
        widget.model_adapted(adapted.base.signature != adapted.predictor.signature)
        return True

    def revert_model(self) -> None:
        """(GUI thread) Prompts use the chosen model's own weights again."""
        served = self._widget.models.cached()
        base = self._widget.models.revert()
        if base is not None:
            self._widget.model_adapted(served is None or served.signature != base.signature)


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
        viewer = getattr(napari_viewer, "__wrapped__", napari_viewer)
        self._viewer = viewer
        self.binding = LayerBinding(viewer)
        self.models = ModelHolder()
        self.embeddings = LayerEmbeddings()
        self.jobs = Scheduler()
        self.engine = WidgetEngine(self)
        self._watched_image: Image | None = None
        self.model_section = ModelSection(viewer, self.models, self.binding,
                                          self.embeddings, self.jobs, self._check_image)  # fmt: skip
        self.prompt_section = PromptSection(viewer, self.binding, self.models,
                                            self.embeddings, self.model_section)  # fmt: skip
        self.stack_section = StackSection(viewer, self.binding, self.models, self.embeddings,
                                          self.jobs, self.model_section, self.prompt_section,
                                          self._check_image)  # fmt: skip
        self.auto_panel = AutoPanel(viewer, self.engine)
        self.refine_panel = RefinePanel(viewer, self.engine)
        self.learn_panel = LearnPanel(viewer, self.engine)
        self._layout()
        self._wire()
        self.model_section.apply_model_choice()
        self.model_section.update_status()
        self.model_section.follow_image()

    def _layout(self) -> None:
        outer = QVBoxLayout(self)
        interactive = QWidget()
        layout = QVBoxLayout(interactive)
        for section in (self.model_section, self.prompt_section, self.stack_section):
            layout.addWidget(section)
        layout.addStretch(1)
        self.tabs = QTabWidget()
        self.tabs.addTab(interactive, "Interactive")
        self.tabs.addTab(self.auto_panel, "Automatic")
        self.tabs.addTab(self.refine_panel, "Refine")
        self.tabs.addTab(self.learn_panel, "From my objects")
        outer.addWidget(self.tabs)

    def _wire(self) -> None:
        m, p, s = self.model_section, self.prompt_section, self.stack_section
        m.image_chosen.connect(self._on_image)
        m.model_changed.connect(lambda: self.binding.show_preview((), None))
        m.model_combo.currentIndexChanged.connect(self._suggest_auto_preset)
        self._suggest_auto_preset()
        m.embedding_finished.connect(self.embedding_finished.emit)
        p.preview_updated.connect(self.preview_updated.emit)
        p.committed.connect(m.update_status)
        s.propagated.connect(self.propagated.emit)
        s.propagation_finished.connect(self.propagation_finished.emit)
        dims = self._viewer.dims
        dims.events.current_step.connect(self._on_slice)
        self.destroyed.connect(disconnector(dims.events.current_step, self._on_slice))

    def idle(self) -> bool:
        """True when no embedding, decode or propagation is running or queued."""
        return (not self.prompt_section.busy and not self.model_section.embedding_running
                and not self.stack_section.propagation_running)  # fmt: skip

    def _suggest_auto_preset(self, _=None) -> None:
        """The Automatic tab starts from the chosen model's own automatic settings (its
        architecture's ``auto_preset``, as the CLI and the Python API): the bundled model's
        predicted IoUs and stability scores run lower than the official models', so the
        official defaults would pass none of its masks. A weights file starts from the
        official defaults."""
        from napari_sam.model.config import get_config
        from napari_sam.model.download import WEIGHTS

        choice = self.model_section.chosen()
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
        made = self.binding.use_image(image)
        for layer in made:
            if layer is self.binding.points or layer is self.binding.shapes:
                self._bind_keys(layer)
                layer.events.data.connect(self._on_prompt_data)
        if self.binding.output is not None:  # this image's own output layer
            self.prompt_section.output_combo.set_layer(self.binding.output)
            self.learn_panel.objects_combo.set_layer(self.binding.output)
        if self.binding.points is not None and made:
            self._viewer.layers.selection.active = self.binding.points
            self.binding.points.mode = "add"
        self.stack_section.fill_axes(image)
        self.model_section.update_status()

    def _bind_keys(self, layer) -> None:
        p = self.prompt_section
        layer.bind_key("c", lambda _layer: p.commit(), overwrite=True)
        layer.bind_key("Shift-C", lambda _layer: p.clear(), overwrite=True)
        layer.bind_key("n", lambda _layer: p.negative_button.toggle(), overwrite=True)
        layer.bind_key("m", lambda _layer: p.cycle_candidate(), overwrite=True)
        layer.bind_key("Shift-S", lambda _layer: self.stack_section.propagate(), overwrite=True)
        layer.bind_key("f", lambda _layer: self.find_similar(), overwrite=True)

    def find_similar(self) -> None:
        """Find objects like the committed ones in the prompt section's output layer."""
        output = self.prompt_section.output_combo.layer()
        if output is not None:
            self.learn_panel.objects_combo.set_layer(output)
        self.learn_panel.find_similar()

    def model_adapted(self, reembed: bool) -> None:
        """The model in use changed weights in place of the chosen ones (adapted or back to
        the base); ``reembed``: its encoder differs, so the embeddings are opened again."""
        if reembed:
            self.embeddings.reset()
        self.model_section.model_changed.emit()
        self.model_section.update_status()

    def _on_contrast(self, _event=None) -> None:
        self.model_section.update_status()

    def _on_prompt_data(self, event) -> None:
        action = str(getattr(event, "action", "changed"))
        if action.endswith(("adding", "removing")):
            return
        self.prompt_section.request_preview()

    def _on_slice(self, _event=None) -> None:
        if self.binding.image is not None and len(spatial_shape(self.binding.image)) > 2:
            self.prompt_section.request_preview()
            self.model_section.update_status()

    def _check_image(self) -> Image | None:
        image = self.binding.image
        if image is None:
            others = [f"{lay.name!r} ({type(lay).__name__})" for lay in self._viewer.layers]
            found = f"; the viewer has {', '.join(others)}, not an image" if others else ""
            show_error(f"Segment Anything needs an Image layer: open or choose one{found}.")
            return None
        if not self.binding.layers_present():
            self._on_image(image)  # remade prompt layers get their keys and live preview
        return image
