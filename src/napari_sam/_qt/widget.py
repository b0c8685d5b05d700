"""The Segment Anything dock widget (placeholder until the interactive widget lands)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget

if TYPE_CHECKING:
    import napari


class SamWidget(QWidget):
    """Dock widget of the plugin; holds the viewer it was opened in."""

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("Segment Anything"))
