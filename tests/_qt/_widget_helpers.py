"""Helpers of the widget tests: dock, embed, click points, inspect regions."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

EMBED_TIMEOUT_MS = 300_000  # first use loads the model; the machines are shared and slow


class FakeEngine:
    """The two methods a panel uses (see napari_sam.panel_contract.Engine)."""

    def __init__(self, predictor, layer):
        self._predictor, self._layer = predictor, layer

    def predictor(self):
        return self._predictor

    def image_layer(self):
        return self._layer


def dock(viewer, qtbot):
    """The widget docked from the plugin menu, with its prompt layers made."""
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-sam", "Segment Anything")
    if widget.binding.image is None and widget.model_section.image_combo.layer() is not None:
        qtbot.waitUntil(lambda: widget.binding.points is not None, timeout=5000)
    # CPU and fp32: results do not depend on this machine's bf16 support
    widget.model_section.device_combo.setCurrentText("cpu")
    widget.model_section.precision_combo.setCurrentText("fp32")
    return widget


def embed(widget, qtbot):
    """Click Embed and wait for the embedding to finish."""
    with qtbot.waitSignal(widget.embedding_finished, timeout=EMBED_TIMEOUT_MS):
        qtbot.mouseClick(widget.model_section.embed_button, _left())
    return widget


def add_point(widget, qtbot, coord, negative=False):
    """Add a point as a click in add mode does (positive unless ``negative``: the toggle
    button is clicked first) and wait for the preview to follow it."""
    if widget.prompt_section.negative_button.isChecked() != negative:
        qtbot.mouseClick(widget.prompt_section.negative_button, _left())
    with qtbot.waitSignal(widget.preview_updated, timeout=EMBED_TIMEOUT_MS):
        widget.binding.points.add(np.asarray(coord, dtype=float))


def _left():
    from qtpy.QtCore import Qt

    return Qt.MouseButton.LeftButton


def component_at(mask: np.ndarray, point) -> np.ndarray:
    """The connected region of ``mask`` (bool) containing ``point``."""
    lab, _ = ndimage.label(mask)
    value = lab[tuple(round(x) for x in point)]
    return lab == value if value else np.zeros_like(mask)


def isolated_nuclei(labels: np.ndarray, n: int = 3) -> list[tuple[tuple[int, int], int]]:
    """``n`` large nuclei touching no other, as ((row, col) of an inner pixel, label id)."""
    found = []
    for lab in np.unique(labels):
        if lab == 0:
            continue
        obj = labels == lab
        ring = ndimage.binary_dilation(obj, iterations=3) & ~obj
        if np.any(labels[ring] != 0):
            continue
        dist = ndimage.distance_transform_edt(obj)
        r, c = np.unravel_index(np.argmax(dist), dist.shape)
        if 40 < r < labels.shape[0] - 40 and 40 < c < labels.shape[1] - 40:
            found.append(((int(r), int(c)), int(lab), int(obj.sum())))
    found.sort(key=lambda t: -t[2])
    return [(p, lab) for p, lab, _ in found[:n]]


def store_ready(predictor):
    """The disc stand-in (tests/stub_sam.py) with SAM's 256 feature channels: its config
    says 256 (what embedding stores are laid out for) while its encoder makes 8."""
    import torch

    encoder = predictor.model.image_encoder
    encoder.scale = torch.nn.Parameter(torch.arange(1, 257, dtype=torch.float32))
    return predictor


def use_disc_model(widget, **kwargs):
    """Select the disc stand-in of tests/stub_sam.py: the real Predictor (validation,
    transforms, upsampling, label writes) with only the decoder step replaced by discs around
    positive points and filled boxes. Widget tests then check the widget, not how far the
    bundled model's training has come (tests/training/test_bundled.py checks that). Keyword
    arguments go to :class:`stub_sam.DiscSam` (its input size sets the default tiling)."""
    from napari_sam.model_choice import ModelChoice
    from stub_sam import disc_predictor

    def load(device, precision):
        return store_ready(disc_predictor(**kwargs))

    widget.model_section.add_model(ModelChoice("disc stub", loader=load, key="disc"))
    return widget


def docked_with_stub(make_napari_viewer, qtbot, *images, loader=None, delay=0.0):
    """A viewer with ``images`` (named image0, image1, ...), the widget docked on the first
    and the disc stand-in chosen (``loader()``'s predictor instead when given; its encoder
    sleeps ``delay`` s per slice, in 8 cancellable steps). Returns (viewer, widget, the
    predictors made)."""
    from napari_sam.model_choice import ModelChoice
    from stub_sam import disc_predictor

    viewer = make_napari_viewer()
    for i, data in enumerate(images):
        viewer.add_image(data, name=f"image{i}")
    viewer.layers.selection.active = viewer.layers[0]
    widget = dock(viewer, qtbot)
    widget.model_section.image_combo.set_layer(viewer.layers[0])
    made = []

    def load(_device, _precision):
        predictor = store_ready(loader() if loader else disc_predictor(delay=delay, steps=8))
        made.append(predictor)
        return predictor

    widget.model_section.add_model(ModelChoice("disc stub", loader=load, key=f"disc-{delay}"))
    qtbot.waitUntil(lambda: widget.binding.image is viewer.layers[0], timeout=5000)
    return viewer, widget, made
