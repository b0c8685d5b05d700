"""The "Refine labels" panel in a real viewer: a preview with each object's change, accepted
whole or object by object as one undoable step, or discarded; nothing else changes."""

from __future__ import annotations

import numpy as np
import pytest
from _widget_helpers import FakeEngine

from napari_sam._qt.refine_panel import PREVIEW_NAME, RefinePanel
from stub_sam import disc_predictor


def rough_labels():
    labels = np.zeros((64, 64), np.int32)
    labels[5:20, 5:20] = 4
    labels[5:20, 20:30] = 9
    labels[35:60, 45:50] = 7
    labels[55:60, 50:60] = 7  # an L: the stub fills its box
    return labels


@pytest.fixture
def setup(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    labels = rough_labels()
    image = viewer.add_image((labels > 0).astype(np.float32) * 100, name="cells")
    layer = viewer.add_labels(labels.copy(), name="cellpose")
    panel = RefinePanel(viewer, FakeEngine(disc_predictor(), image))
    panel.labels_combo.set_layer(layer)
    with qtbot.waitSignal(panel.finished, timeout=60_000) as done:
        panel.run_button.click()
    assert done.args[0] is not None
    return viewer, layer, panel


def test_the_preview_lists_every_object_and_changes_nothing(setup):
    viewer, layer, panel = setup
    assert PREVIEW_NAME in [lay.name for lay in viewer.layers]
    np.testing.assert_array_equal(layer.data, rough_labels())
    listed = [panel.objects.item(i).text() for i in range(panel.objects.count())]
    assert [t.split(":")[0] for t in listed] == ["4", "7", "9"]
    assert "area" in listed[1]
    assert panel.accept_all_button.isEnabled()


def test_accepting_one_object_changes_only_it_and_undo_restores(setup, qtbot):
    viewer, layer, panel = setup
    for i in range(panel.objects.count()):
        item = panel.objects.item(i)
        item.setSelected(item.text().startswith("7:"))
    with qtbot.waitSignal(panel.accepted):
        panel.accept_selected_button.click()
    before = rough_labels()
    for other in (4, 9):
        np.testing.assert_array_equal(layer.data == other, before == other)
    assert (layer.data == 7).sum() > (before == 7).sum()  # the L's box filled
    assert PREVIEW_NAME not in [lay.name for lay in viewer.layers]
    layer.undo()
    np.testing.assert_array_equal(layer.data, before)


def test_discard_leaves_the_labels_as_they_were(setup):
    viewer, layer, panel = setup
    panel.discard_button.click()
    np.testing.assert_array_equal(layer.data, rough_labels())
    assert PREVIEW_NAME not in [lay.name for lay in viewer.layers]
    assert not panel.accept_all_button.isEnabled()


def test_labels_edited_meanwhile_are_not_overwritten(setup):
    _viewer, layer, panel = setup
    layer.data_setitem((np.array([30]), np.array([30])), 5)
    edited = np.array(layer.data)
    panel.accept_all_button.click()
    np.testing.assert_array_equal(layer.data, edited)
    assert "changed since" in panel.status.text()


def test_a_stack_is_refined_on_the_displayed_slice_only(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    stack = np.stack([rough_labels(), rough_labels()])
    image = viewer.add_image((stack > 0).astype(np.float32) * 100, name="cells")
    layer = viewer.add_labels(stack.copy(), name="cellpose")
    viewer.dims.set_point(0, 1)
    panel = RefinePanel(viewer, FakeEngine(disc_predictor(), image))
    panel.labels_combo.set_layer(layer)
    with qtbot.waitSignal(panel.finished, timeout=60_000):
        panel.run_button.click()
    panel.accept_all_button.click()
    np.testing.assert_array_equal(layer.data[0], stack[0])
    assert (layer.data[1] == 7).sum() > (stack[1] == 7).sum()
