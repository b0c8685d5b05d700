"""The widget's background jobs and its writes into the user's labels, in a real viewer:
jobs that may not overlap do not, each has its own cancel, and only the object the user
pointed at changes (under the id chosen when the work started)."""

from __future__ import annotations

import numpy as np
import pytest
from _widget_helpers import add_point, docked_with_stub, embed
from qtpy.QtCore import Qt, QThreadPool

LEFT = Qt.MouseButton.LeftButton
WAIT_MS = 120_000
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")


def _docked(make_napari_viewer, qtbot, *images, delay=0.0):
    viewer, widget, _made = docked_with_stub(make_napari_viewer, qtbot, *images, delay=delay)
    return viewer, widget


def _no_threads(qtbot):
    qtbot.waitUntil(lambda: QThreadPool.globalInstance().activeThreadCount() == 0,
                    timeout=WAIT_MS)  # fmt: skip


def _stack(n, size=64):
    return np.random.default_rng(0).random((n, size, size)).astype(np.float32)


def test_segmenting_through_the_stack_waits_for_a_running_embedding(
    make_napari_viewer, qtbot, notifications
):
    """Shift-S while an embedding runs starts when it ends (it never runs beside it), and
    a store cannot be opened meanwhile."""
    _viewer, widget = _docked(make_napari_viewer, qtbot, _stack(12), delay=0.3)
    c = widget.binding
    qtbot.mouseClick(widget.model_section.embed_button, LEFT)  # 12 slices, 0.3 s each
    assert widget.model_section.embedding_running
    c.points.add(np.array([0.0, 30.0, 30.0]))  # a prompt to follow
    widget.stack_section.propagate()
    assert not widget.stack_section.propagation_running  # not beside the embedding
    assert any("starts when the embedding ends" in m for s, m in notifications if s == "info")
    with qtbot.waitSignal(widget.propagation_finished, timeout=WAIT_MS):
        pass  # the embedding ends, then the propagation runs
    assert np.asarray(c.output.data).any()
    assert widget.jobs.running() == []
    _no_threads(qtbot)


def test_a_store_is_not_opened_while_another_job_holds_the_encoder(
    make_napari_viewer, qtbot, notifications, tmp_path
):
    _viewer, widget = _docked(make_napari_viewer, qtbot, _stack(8), delay=0.3)
    c = widget.binding
    c.points.add(np.array([0.0, 30.0, 30.0]))
    qtbot.waitUntil(lambda: not widget.model_section.embedding_running, timeout=WAIT_MS)
    with qtbot.waitSignal(widget.propagation_finished, timeout=WAIT_MS):
        widget.stack_section.propagate()
        widget.model_section.open_embeddings(tmp_path / "other.zarr")
        assert any("Cannot open the embeddings now" in m
                   for s, m in notifications if s == "warning")  # fmt: skip
        assert "(opened)" not in widget.model_section.status.text()
    assert "(opened)" not in widget.model_section.status.text()
    assert not [m for s, m in notifications if s == "error"]
    _no_threads(qtbot)


def test_cancelling_the_automatic_tab_inside_the_encoder_frees_the_widget(
    make_napari_viewer, qtbot
):
    """A cancel that lands while the encoder runs ends the automatic job: Embed and the
    tab's Run work again afterwards."""
    _viewer, widget = _docked(make_napari_viewer, qtbot, _stack(1)[0], delay=2.0)
    panel = widget.auto_panel
    with qtbot.waitSignal(panel.finished, timeout=WAIT_MS) as done:
        panel.run_button.click()
        qtbot.waitUntil(lambda: bool(widget.jobs.running("auto")), timeout=WAIT_MS)
        qtbot.wait(500)  # inside the 2 s encode
        panel.cancel()
    assert done.args[0] is None and panel.status.text() == "Cancelled."
    assert widget.jobs.running() == [] and panel.run_button.isEnabled()
    embed(widget, qtbot)  # the encoder is free again
    assert "image embedded" in widget.model_section.status.text()
    _no_threads(qtbot)


def test_a_chosen_label_id_that_exists_keeps_its_other_pixels(make_napari_viewer, qtbot,
                                                              notifications):  # fmt: skip
    image = np.random.default_rng(1).random((64, 64)).astype(np.float32)
    _viewer, widget = _docked(make_napari_viewer, qtbot, image)
    c = widget.binding
    embed(widget, qtbot)
    add_point(widget, qtbot, (15, 15))
    assert widget.prompt_section.commit() == [1]
    before = np.asarray(c.output.data).copy()
    add_point(widget, qtbot, (45, 45))
    widget.prompt_section.label_spin.setValue(1)  # the id of the object already there
    assert widget.prompt_section.commit() == [1]
    out = np.asarray(c.output.data)
    assert (out[before == 1] == 1).all()  # the first part of label 1 is still there
    assert out[45, 45] == 1 and (out == 1).sum() > (before == 1).sum()
    assert any("already existed" in m for s, m in notifications if s == "info")
    _no_threads(qtbot)


def test_propagation_into_an_existing_label_id_keeps_its_other_pixels(make_napari_viewer, qtbot):
    viewer, widget = _docked(make_napari_viewer, qtbot, _stack(6), delay=0.0)
    c, p = widget.binding, widget.prompt_section
    viewer.dims.set_current_step(0, 2)
    add_point(widget, qtbot, (2, 12, 12))
    p.label_spin.setValue(5)
    assert p.commit() == [5]
    first = np.asarray(c.output.data) == 5
    c.points.add(np.array([2.0, 45.0, 45.0]))
    qtbot.waitUntil(lambda: not widget.model_section.embedding_running, timeout=WAIT_MS)
    p.label_spin.setValue(5)  # the same id, not refine: the new part joins object 5
    with qtbot.waitSignal(widget.propagation_finished, timeout=WAIT_MS):
        widget.stack_section.propagate()
    out = np.asarray(c.output.data)
    assert (out[first] == 5).all() and out[2, 45, 45] == 5
    _no_threads(qtbot)


def test_propagation_writes_under_the_id_chosen_when_it_started(make_napari_viewer, qtbot):
    viewer, widget = _docked(make_napari_viewer, qtbot, _stack(8), delay=0.05)
    c = widget.binding
    widget.prompt_section.label_spin.setValue(5)
    c.points.add(np.array([3.0, 30.0, 30.0]))
    viewer.dims.set_current_step(0, 3)
    qtbot.waitUntil(lambda: not widget.model_section.embedding_running, timeout=WAIT_MS)
    with qtbot.waitSignal(widget.propagation_finished, timeout=WAIT_MS):
        widget.stack_section.propagate()
        widget.prompt_section.label_spin.setValue(9)  # changed while it runs: not this object's id
    out = np.asarray(c.output.data)
    assert set(np.unique(out)) == {0, 5}
    _no_threads(qtbot)


def test_each_image_keeps_its_own_output_layer(make_napari_viewer, qtbot):
    a = np.random.default_rng(2).random((64, 64)).astype(np.float32)
    b = np.random.default_rng(3).random((64, 64)).astype(np.float32)  # same shape
    viewer, widget = _docked(make_napari_viewer, qtbot, a, b)
    c = widget.binding
    out_a = c.output
    embed(widget, qtbot)
    add_point(widget, qtbot, (20, 20))
    widget.prompt_section.commit()
    widget.model_section.image_combo.set_layer(viewer.layers["image1"])
    qtbot.waitUntil(lambda: c.image is viewer.layers["image1"], timeout=5000)
    assert c.output is not out_a and c.output.name == "image1 objects"
    assert widget.prompt_section.output_combo.layer() is c.output
    embed(widget, qtbot)
    add_point(widget, qtbot, (40, 40))
    widget.prompt_section.commit()
    assert np.asarray(out_a.data)[40, 40] == 0  # B's object is not in A's layer
    assert np.asarray(c.output.data)[40, 40] == 1
    widget.model_section.image_combo.set_layer(viewer.layers["image0"])
    qtbot.waitUntil(lambda: c.image is viewer.layers["image0"], timeout=5000)
    assert c.output is out_a  # back to A: A's objects
    _no_threads(qtbot)
