"""The plugin inside a real napari viewer (under Xvfb)."""

import numpy as np

from napari_sam._qt.widget import SamWidget


def test_widget_docks_from_the_plugin_menu(make_napari_viewer):
    viewer = make_napari_viewer()
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-sam", "Segment Anything")
    assert isinstance(widget, SamWidget)
    # napari hands plugins a proxy of the viewer: it must see this viewer's layers.
    viewer.add_image(np.zeros((8, 8)), name="probe")
    assert [layer.name for layer in widget.viewer.layers] == ["probe"]


def test_open_sample_adds_an_image_layer(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-sam", "nuclei_2d")
    viewer.open_sample("napari-sam", "nuclei_3d")
    assert [layer.name for layer in viewer.layers] == ["nuclei", "nuclei 3D"]
    assert viewer.layers["nuclei 3D"].ndim == 3
