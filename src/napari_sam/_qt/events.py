"""Connecting widgets to viewer events without keeping them alive."""

from __future__ import annotations


def disconnector(emitter, callback):
    """A function that disconnects ``callback`` from ``emitter`` (for a widget's
    ``destroyed`` signal; it holds no reference to the widget itself)."""

    def disconnect(*_args):
        emitter.disconnect(callback)

    return disconnect
