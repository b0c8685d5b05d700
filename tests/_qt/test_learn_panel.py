"""The "From my objects" tab in a real viewer: find similar shows a preview that is accepted
object by object into empty pixels only (one undoable step) or rejected; adapting swaps the
model the prompts use, "Back to base model" restores it, and cancelling leaves it."""

from __future__ import annotations

import numpy as np
import pytest
from _widget_helpers import EMBED_TIMEOUT_MS, FakeEngine, dock

from napari_sam._qt.learn_panel import PREVIEW_NAME, LearnPanel
from napari_sam.predictor import Predictor
from napari_sam.testing import two_kinds


@pytest.fixture(scope="module")
def scene():
    return two_kinds((256, 256), seed=3, n_large=6, n_small=14)


def examples(scene, kind: int = 1, n: int = 3) -> np.ndarray:
    ids = [i for i, k in scene.kinds.items() if k == kind][:n]
    return np.where(np.isin(scene.labels, ids), scene.labels, 0).astype(np.int32)


@pytest.fixture
def found(make_napari_viewer, qtbot, scene):
    viewer = make_napari_viewer()
    image = viewer.add_image(scene.image, name="cells")
    committed = examples(scene)
    layer = viewer.add_labels(committed.copy(), name="objects")
    panel = LearnPanel(viewer, FakeEngine(Predictor.load("bundled", device="cpu"), image))
    panel.objects_combo.set_layer(layer)
    with qtbot.waitSignal(panel.similar_finished, timeout=EMBED_TIMEOUT_MS) as done:
        panel.find_button.click()
    assert done.args[0] is not None, panel.similar_status.text()
    return viewer, layer, panel, committed


def test_the_preview_changes_nothing_and_accepting_writes_only_the_chosen(found, qtbot):
    viewer, layer, panel, committed = found
    assert PREVIEW_NAME in [lay.name for lay in viewer.layers]
    np.testing.assert_array_equal(layer.data, committed)
    assert panel.found_list.count() >= 5
    chosen = panel.found_list.item(0)
    chosen.setSelected(True)
    label = panel.selected_ids()[0]
    expected = panel.found == label
    with qtbot.waitSignal(panel.accepted):
        panel.accept_selected_button.click()
    data = np.asarray(layer.data)
    np.testing.assert_array_equal(data == label, expected)
    np.testing.assert_array_equal(data[~expected], committed[~expected])  # nothing else
    assert PREVIEW_NAME not in [lay.name for lay in viewer.layers]
    layer.undo()
    np.testing.assert_array_equal(layer.data, committed)


def test_rejected_objects_leave_the_preview_and_are_never_accepted(found, qtbot):
    _viewer, layer, panel, committed = found
    panel.found_list.item(0).setSelected(True)
    rejected = panel.selected_ids()[0]
    where = panel.found == rejected
    panel.reject_selected_button.click()
    assert not (np.asarray(panel.preview.data) == rejected).any()
    assert rejected not in [int(panel.found_list.item(i).text().split(":")[0])
                            for i in range(panel.found_list.count())]  # fmt: skip
    with qtbot.waitSignal(panel.accepted):
        panel.accept_all_button.click()
    data = np.asarray(layer.data)
    assert not data[where].any()
    assert (data[committed > 0] == committed[committed > 0]).all()
    assert panel._rejected is not None  # the next search takes it as a negative example


def test_a_layer_edited_meanwhile_is_not_overwritten(found):
    _viewer, layer, panel, _committed = found
    layer.data_setitem((np.array([0]), np.array([0])), 99)
    edited = np.asarray(layer.data).copy()
    panel.accept_all_button.click()
    np.testing.assert_array_equal(layer.data, edited)
    assert "changed" in panel.similar_status.text()


def _widget_with_objects(make_napari_viewer, qtbot, scene):
    viewer = make_napari_viewer()
    viewer.add_image(scene.image, name="cells")
    widget = dock(viewer, qtbot)
    widget.binding.output.data = examples(scene, kind=0, n=4)
    panel = widget.learn_panel
    assert panel.objects_combo.layer() is widget.binding.output
    return widget, panel


def test_adapting_serves_the_adapted_model_until_back_to_base(make_napari_viewer, qtbot, scene):
    widget, panel = _widget_with_objects(make_napari_viewer, qtbot, scene)
    panel.budget.setValue(5)
    with qtbot.waitSignal(panel.adapt_finished, timeout=EMBED_TIMEOUT_MS) as done:
        panel.adapt_button.click()
    adapted = done.args[0]
    assert adapted is not None, panel.adapt_status.text()
    assert adapted.report.steps >= 1 and adapted.report.objects == 4
    assert (adapted.report.target, adapted.report.decoder_part) == ("decoder", "heads")  # default
    assert widget.models.cached() is adapted.predictor
    assert "adapted" in widget.model_section.status.text()
    assert panel.save_button.isEnabled() and panel.revert_button.isEnabled()
    panel.revert_button.click()
    assert widget.models.cached() is adapted.base
    assert "adapted" not in widget.model_section.status.text()


def test_cancelling_an_adaptation_leaves_the_model(make_napari_viewer, qtbot, scene):
    widget, panel = _widget_with_objects(make_napari_viewer, qtbot, scene)
    panel.budget.setValue(600)
    with qtbot.waitSignal(panel.adapt_job.progress, timeout=EMBED_TIMEOUT_MS):
        panel.adapt_button.click()
    base = widget.models.cached()
    with qtbot.waitSignal(panel.adapt_finished, timeout=60_000) as done:
        panel.adapt_cancel.click()
    assert done.args[0] is None
    assert widget.models.cached() is base and not widget.models.adapted
    assert "unchanged" in panel.adapt_status.text()
    assert panel.adapt_button.isEnabled()
