"""A combo box of the viewer's layers of one type, holding layer references (not names)."""

from __future__ import annotations

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QComboBox


class LayerCombo(QComboBox):
    """Lists the layers of ``layer_type`` in ``viewer`` (those ``accept(layer)`` allows); follows additions, removals and
    renames, and keeps the chosen layer while others come and go. ``layer_changed`` carries
    the chosen layer (or None)."""

    layer_changed = Signal(object)

    def __init__(self, viewer, layer_type, parent=None, accept=None) -> None:
        super().__init__(parent)
        self._viewer = viewer
        self._type = layer_type
        self._accept = accept or (lambda layer: True)
        self._current = None
        self._named: set[int] = set()
        events = viewer.layers.events
        for emitter in (events.inserted, events.removed, events.moved):
            emitter.connect(self._refill)
        self.destroyed.connect(_disconnector(events, self._refill))
        self.currentIndexChanged.connect(self._on_index)
        self._refill()

    def layer(self):
        """The chosen layer, or None."""
        return self._current

    def set_layer(self, layer) -> None:
        for i in range(self.count()):
            if self.itemData(i) is layer:
                self.setCurrentIndex(i)
                return

    def _refill(self, event=None) -> None:
        layers = [
            lay for lay in self._viewer.layers if isinstance(lay, self._type) and self._accept(lay)
        ]
        keep = self._current if any(lay is self._current for lay in layers) else None
        self.blockSignals(True)
        self.clear()
        for lay in layers:
            self.addItem(lay.name, lay)
            if id(lay) not in self._named:
                self._named.add(id(lay))
                lay.events.name.connect(self._refill)
        if keep is None and layers:
            keep = layers[-1] if self._current is None else layers[0]
        self.blockSignals(False)
        if keep is not None:
            self.set_layer(keep)
        self._on_index()

    def _on_index(self, _i=None) -> None:
        layer = self.currentData() if self.count() else None
        if layer is not self._current:
            self._current = layer
            self.layer_changed.emit(layer)


def _disconnector(events, callback):
    def disconnect(*_args):
        for emitter in (events.inserted, events.removed, events.moved):
            emitter.disconnect(callback)

    return disconnect
