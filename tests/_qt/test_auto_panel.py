"""The "Segment everything" panel in a real viewer: settings, run, current slice, cancel."""

from __future__ import annotations

import pytest
from _widget_helpers import FakeEngine

from napari_sam._qt.auto_panel import AutoPanel
from napari_sam.automatic import PRESETS, AutoMaskConfig

LOOSE = AutoMaskConfig(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                       box_nms_thresh=0.95)  # fmt: skip


@pytest.fixture
def setup(make_napari_viewer, tiny_sam):
    from napari_sam.predictor import Predictor
    from napari_sam.training.synthetic import synthetic_nuclei

    def make(shape):
        viewer = make_napari_viewer()
        layer = viewer.add_image(synthetic_nuclei(shape, seed=0).image, name="nuclei")
        panel = AutoPanel(viewer, FakeEngine(Predictor(tiny_sam), layer))
        panel.set_config(LOOSE)
        return viewer, layer, panel

    return make


def test_nothing_found_says_why_and_adds_no_layer(setup, qtbot, notifications):
    viewer, _layer, panel = setup((64, 64))
    panel.set_config(LOOSE.with_values(pred_iou_thresh=1.0))  # no prediction passes
    layers = list(viewer.layers)
    with qtbot.waitSignal(panel.finished, timeout=120_000) as done:
        panel.run_button.click()
    assert done.args[0] is None and list(viewer.layers) == layers
    assert panel.status.text() == "Found no objects (AMG)." and panel.run_button.isEnabled()
    warnings = [m for s, m in notifications if s == "warning"]
    assert any("found no object" in m and "predicted IoU > 1" in m for m in warnings), warnings


@pytest.fixture
def decoder_setup(make_napari_viewer, tiny_sam):
    """A panel on a predictor with an instance decoder (random weights)."""
    import torch

    from napari_sam.model.instance_decoder import InstanceDecoder, InstanceDecoderConfig
    from napari_sam.predictor import Predictor
    from napari_sam.training.synthetic import synthetic_nuclei

    torch.manual_seed(0)
    decoder = InstanceDecoder(InstanceDecoderConfig.for_sam(tiny_sam.config, initial_features=4))
    viewer = make_napari_viewer()
    layer = viewer.add_image(synthetic_nuclei((64, 64), seed=0).image, name="nuclei")
    panel = AutoPanel(viewer, FakeEngine(Predictor(tiny_sam, instance_decoder=decoder), layer))
    return viewer, panel


@pytest.mark.parametrize(("choice", "ran"), [("best", "APG"), ("ais", "AIS"), ("amg", "AMG")])
def test_the_mode_chosen_is_the_mode_run(decoder_setup, qtbot, choice, ran):
    _viewer, panel = decoder_setup
    assert panel.chosen_mode() == "best" and panel.amg_settings.isHidden()
    panel.set_mode(choice)
    assert panel.amg_settings.isHidden() == (choice != "amg")
    if choice == "amg":
        panel.set_config(LOOSE)
    with qtbot.waitSignal(panel.finished, timeout=120_000):
        panel.run_button.click()
    assert f"({ran})" in panel.status.text(), panel.status.text()
    assert panel.run_button.isEnabled()


def test_form_follows_presets_and_edits(setup):
    _viewer, _layer, panel = setup((32, 32))
    panel.preset.setCurrentText("nuclei")
    assert panel.config() == PRESETS["nuclei"]
    panel.inputs["points_per_side"].setValue(20)
    panel.inputs["box_nms_thresh"].setValue(0.5)
    assert panel.config() == PRESETS["nuclei"].with_values(points_per_side=20, box_nms_thresh=0.5)


def test_run_adds_a_labels_layer(setup, qtbot):
    viewer, layer, panel = setup((64, 64))
    with qtbot.waitSignal(panel.finished, timeout=120_000) as done:
        panel.run_button.click()
    added = done.args[0]
    assert added is not None and added in viewer.layers
    assert added.data.shape == layer.data.shape and added.data.max() >= 1
    assert panel.progress.value() == 0 and panel.run_button.isEnabled()
    assert "Found" in panel.status.text()


def test_run_on_the_displayed_slice_only(setup, qtbot):
    viewer, _layer, panel = setup((3, 64, 64))
    viewer.dims.set_current_step(0, 1)
    with qtbot.waitSignal(panel.finished, timeout=120_000) as done:
        panel.run_button.click()
    labels = done.args[0].data
    assert labels.shape == (3, 64, 64)
    assert labels[1].max() >= 1 and labels[0].max() == 0 and labels[2].max() == 0


def test_cancel_stops_and_adds_nothing(setup, qtbot):
    viewer, _layer, panel = setup((64, 64))
    panel.inputs["points_per_batch"].setValue(1)  # 16 steps: time to cancel
    steps = []

    def cancel_on_first_step(step):
        steps.append(step)
        panel.cancel_button.click()

    with qtbot.waitSignal(panel.finished, timeout=120_000) as done:
        panel.run_button.click()
        panel.worker.yielded.connect(cancel_on_first_step)
    assert done.args[0] is None
    assert len(viewer.layers) == 1
    assert steps and steps[-1][0] < steps[-1][1]
    assert panel.status.text() == "Cancelled." and panel.run_button.isEnabled()
    assert not panel.cancel_button.isEnabled()


def test_the_displayed_slice_of_a_translated_layer_under_an_extra_viewer_axis(
    make_napari_viewer, tiny_sam, qtbot
):
    """The slice is the one on screen in the layer's own data coordinates: the layer is
    moved 2 slices along z and the viewer has a 4th axis from another layer."""
    import numpy as np

    from napari_sam.predictor import Predictor
    from napari_sam.training.synthetic import synthetic_nuclei

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((2, 6, 64, 64), np.float32), name="time lapse")  # t, z, y, x
    data = np.zeros((4, 64, 64), np.float32)
    data[1] = synthetic_nuclei((64, 64), seed=0).image
    layer = viewer.add_image(data, name="nuclei", translate=(2, 0, 0))
    panel = AutoPanel(viewer, FakeEngine(Predictor(tiny_sam), layer))
    panel.set_config(LOOSE)
    viewer.dims.set_current_step(1, 3)  # world z 3 = the layer's slice 1
    with qtbot.waitSignal(panel.finished, timeout=120_000) as done:
        panel.run_button.click()
    labels = done.args[0].data
    assert labels.shape == (4, 64, 64)
    assert labels[1].max() >= 1 and not np.delete(labels, 1, axis=0).any()


def test_the_gui_thread_never_scans_a_whole_stack_of_labels(setup, qtbot, monkeypatch):
    """Counting the objects of a whole stack's result happens on the worker: the GUI
    thread only adds the layer."""
    import threading

    import numpy as np

    _viewer, _layer, panel = setup((3, 64, 64))
    panel.whole_stack.setChecked(True)
    unique, on_gui = np.unique, []

    def spy(values, *args, **kwargs):
        if threading.current_thread() is threading.main_thread():
            on_gui.append(np.size(values))
        return unique(values, *args, **kwargs)

    monkeypatch.setattr(np, "unique", spy)
    with qtbot.waitSignal(panel.finished, timeout=120_000) as done:
        panel.run_button.click()
    assert done.args[0] is not None and done.args[0].data.shape == (3, 64, 64)
    assert not [n for n in on_gui if n >= 3 * 64 * 64]
