"""What the panels of the Segment Anything widget share: the chosen model and image layer.

:class:`Engine` is the contract between :class:`~napari_sam._qt.widget.SamWidget` and the
panels it hosts (e.g. ``napari_sam._qt.auto_panel.AutoPanel(viewer, engine)``). A panel
calls the two methods below, and may call ``embeddings_opener(index=None)`` when the engine
has it (the widget's does: GUI thread; returns a function ``predictor -> embeddings`` to
call on a worker, the widget's own :class:`~napari_sam.stack_embeddings.StackEmbeddings`, so a panel
embeds no slice the widget already embedded); everything else is the widget's own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import napari

    from napari_sam.predictor import Predictor


@runtime_checkable
class Engine(Protocol):
    """The model and image chosen in the widget's pickers."""

    def predictor(self) -> Predictor:
        """The :class:`~napari_sam.predictor.Predictor` for the model, device and precision
        chosen in the widget.

        Loads the model on first use (or after the choice changed) and caches it; later
        calls return the same object at once. Loading can take seconds (or download
        weights), so call this from a worker thread (``napari.qt.threading.thread_worker``),
        never from the GUI thread. Raises ``RuntimeError`` / ``ValueError`` /  ``OSError``
        with a message meant for the user when the model cannot be loaded; thread-safe.
        """
        ...

    def image_layer(self) -> napari.layers.Image | None:
        """The image layer chosen in the widget's layer picker, or ``None`` when there is
        none. Call from the GUI thread; read the layer's data there (or take a reference to
        the array) before handing work to a worker."""
        ...
