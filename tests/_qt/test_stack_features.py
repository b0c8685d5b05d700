"""Propagation through z / t, the embedding store and the Automatic tab, in a real viewer
driven through the widget's controls.

The model is mostly the disc stand-in (tests/stub_sam.py) behind the real predictor: its
mask of a point is a disc, of a box the box, of a dense prompt that prompt, so an object
carried from slice to slice goes on until a slice with only negative points stops it.
"""

from __future__ import annotations

import argparse
import shutil

import numpy as np
import pytest
from _widget_helpers import EMBED_TIMEOUT_MS, add_point, dock, embed, store_ready
from qtpy.QtCore import Qt, QThreadPool

from napari_sam.model_choice import ModelChoice
from stub_sam import disc_predictor

LEFT = Qt.MouseButton.LeftButton
WAIT_MS = 120_000
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")


def _image(shape, seed=0):
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def _docked(make_napari_viewer, qtbot, data, loader=None, delay=0.0):
    """A viewer with ``data`` and the widget using the stub (or ``loader``'s predictor);
    returns (viewer, widget, predictors made)."""
    viewer = make_napari_viewer()
    viewer.add_image(data, name="cells")
    widget = dock(viewer, qtbot)
    made = []

    def load(_device, _precision):
        made.append(loader() if loader else store_ready(disc_predictor(delay=delay, steps=8)))
        return made[-1]

    widget.model_section.add_model(ModelChoice("stub", loader=load, key=f"stub-{delay}-{id(loader)}"))
    qtbot.waitUntil(lambda: widget.binding.points is not None, timeout=5000)
    return viewer, widget, made


def _encodes(made) -> int:
    return sum(p.model.encode_calls for p in made)


def _propagate(widget, qtbot):
    with qtbot.waitSignal(widget.propagation_finished, timeout=WAIT_MS):
        qtbot.mouseClick(widget.stack_section.propagate_button, LEFT)


def _no_threads(qtbot):
    pool = QThreadPool.globalInstance()
    qtbot.waitUntil(lambda: pool.activeThreadCount() == 0, timeout=WAIT_MS)


def _said(notifications, severity):
    return [m for s, m in notifications if s == severity]


def test_propagation_from_slice_k_writes_its_neighbours_as_one_undo_step(
    make_napari_viewer, qtbot, notifications
):
    viewer, widget, _made = _docked(make_napari_viewer, qtbot, _image((12, 64, 64)))
    c = widget.binding
    assert widget.stack_section.propagate_button.isEnabled() and widget.stack_section.axis_combo.currentText() == "z"
    k = 5
    viewer.dims.set_current_step(0, k)
    add_point(widget, qtbot, (k, 32, 32))
    # the object is absent from slice 9: only a negative point there
    add_point(widget, qtbot, (9, 32, 32), negative=True)
    widget.prompt_section.label_spin.setValue(7)
    _propagate(widget, qtbot)

    out = np.asarray(c.output.data)
    assert set(np.unique(out)) == {0, 7}
    reached = [z for z in range(12) if out[z].any()]
    assert reached == list(range(9))  # from k down to the first slice, up to before slice 9
    # on every slice reached, the object is where it was prompted (within 4 px of the click)
    assert all((out[z, 28:37, 28:37] == 7).any() for z in reached)
    assert len(c.points.data) == 0 and not np.asarray(c.preview.data).any()
    info = " ".join(_said(notifications, "info"))
    assert "Label 7 on 9 slices (z 0-8, from z 5)" in info
    assert "stopped before z 9: only negative points" in info and "reached the first slice" in info

    c.output.undo()  # Ctrl+Z: every slice of the object goes at once
    assert not np.asarray(c.output.data).any()
    _no_threads(qtbot)
    assert not _said(notifications, "error")


def test_4d_propagation_follows_the_slider_moved_last(make_napari_viewer, qtbot, notifications):
    viewer, widget, _made = _docked(make_napari_viewer, qtbot, _image((4, 6, 48, 48)))
    c = widget.binding
    assert [widget.stack_section.axis_combo.itemText(i) for i in range(2)] == ["t", "z"]
    assert widget.stack_section.axis_combo.currentText() == "t"  # napari's slider in use: the first one

    def move_slider(axis, value):  # what dragging a dims slider does
        viewer.dims.last_used = axis
        viewer.dims.set_current_step(axis, value)

    move_slider(0, 2)
    move_slider(1, 3)  # browsing z now
    assert widget.stack_section.axis_combo.currentText() == "z"
    add_point(widget, qtbot, (2, 3, 24, 24))
    _propagate(widget, qtbot)
    out = np.asarray(c.output.data)
    assert all((out[2, z, 20:29, 20:29] == 1).any() for z in range(6))  # every z, at this t
    assert not np.delete(out, 2, axis=0).any()

    widget.stack_section.axis_combo.setCurrentIndex(0)  # the user picks t: moving z does not change it
    widget.stack_section.axis_combo.activated.emit(0)
    move_slider(1, 4)
    assert widget.stack_section.axis_combo.currentText() == "t"
    add_point(widget, qtbot, (2, 4, 10, 38))  # beside object 1 (kept: not overwritten)
    _propagate(widget, qtbot)
    out = np.asarray(c.output.data)
    assert all((out[t, 4, 6:15, 34:43] == 2).any() for t in range(4))  # every t, at this z
    assert (out[2, 4, 20:29, 20:29] == 1).any()  # object 1 kept
    infos = _said(notifications, "info")
    assert any("Label 1 on 6 slices (z 0-5, from z 3)" in m for m in infos), infos
    assert any("Label 2 on 4 slices (t 0-3, from t 2)" in m for m in infos), infos


def test_cancelling_a_propagation_leaves_the_labels_unchanged(
    make_napari_viewer, qtbot, notifications
):
    viewer, widget, made = _docked(make_napari_viewer, qtbot, _image((20, 64, 64)), delay=0.4)
    c = widget.binding
    viewer.dims.set_current_step(0, 10)
    add_point(widget, qtbot, (10, 30, 30))  # embeds slice 10 only
    c.output.data[0, :4, :4] = 3  # an object drawn before
    before = np.asarray(c.output.data).copy()
    qtbot.mouseClick(widget.stack_section.propagate_button, LEFT)
    assert not widget.stack_section.propagate_cancel_button.isHidden()
    qtbot.waitUntil(lambda: widget.stack_section.propagate_progress.value() >= 2, timeout=WAIT_MS)
    with qtbot.waitSignal(widget.propagation_finished, timeout=WAIT_MS):
        qtbot.mouseClick(widget.stack_section.propagate_cancel_button, LEFT)
    assert np.array_equal(np.asarray(c.output.data), before)
    assert _encodes(made) < 20  # it stopped instead of embedding the whole stack
    assert any("cancelled" in m for m in _said(notifications, "info"))
    assert widget.stack_section.propagate_button.isEnabled() and widget.stack_section.propagate_progress.isHidden()
    assert len(c.points.data) == 1  # the prompts stay for another try
    _no_threads(qtbot)
    assert not _said(notifications, "error")


def _embed_cli(image_path, store_path, model):
    """``napari-sam embed IMAGE --out STORE --model MODEL --device cpu``, in process."""
    from napari_sam.cli.embed import run

    args = argparse.Namespace(image=str(image_path), out=str(store_path), model=str(model),
                              device="cpu", tile=None, halo=None, level=0, rgb=False,
                              contrast=None, scheduler=None, workers=1, overwrite=False)  # fmt: skip
    assert run(args) == 0


def test_a_store_made_by_the_cli_opens_and_nothing_is_embedded_again(
    make_napari_viewer, qtbot, notifications, tmp_path
):
    from napari_sam.model.download import WEIGHTS, local_path
    from napari_sam.predictor import Predictor

    weights = tmp_path / "model.pt"  # a fixed copy: the bundled file may be retrained meanwhile
    shutil.copy(local_path(WEIGHTS["bundled"]), weights)
    data = _image((3, 64, 64), seed=5)
    np.save(tmp_path / "cells.npy", data)
    _embed_cli(tmp_path / "cells.npy", tmp_path / "cells.zarr", weights)

    def counted():
        predictor = Predictor.load(str(weights), device="cpu", precision="fp32")
        encode = predictor.model.encode

        def count(images):
            predictor.model.encode_calls += 1
            return encode(images)

        predictor.model.encode_calls = 0
        predictor.model.encode = count
        return predictor

    viewer, widget, made = _docked(make_napari_viewer, qtbot, np.load(tmp_path / "cells.npy"),
                                   loader=counted)  # fmt: skip
    with qtbot.waitSignal(widget.embedding_finished, timeout=EMBED_TIMEOUT_MS):
        widget.model_section.open_embeddings(tmp_path / "cells.zarr")
    assert not _said(notifications, "error"), notifications
    assert "3 / 3 slices embedded" in widget.model_section.status.text()
    assert "cells.zarr (opened)" in widget.model_section.status.text()
    assert any("3 of 3 slice(s) stored" in m for m in _said(notifications, "info"))
    qtbot.mouseClick(widget.model_section.embed_button, LEFT)  # nothing left to embed
    assert not widget.model_section.embedding_running
    viewer.dims.set_current_step(0, 1)
    add_point(widget, qtbot, (1, 30, 30))
    assert widget.binding.masks_index == (1,)
    assert _encodes(made) == 0  # every slice came from the store


def test_a_mismatched_store_is_refused_and_changes_nothing(
    make_napari_viewer, qtbot, notifications, tmp_path
):
    from napari_sam.scaleout import embed_all
    from napari_sam.slice_source import SliceSource
    from napari_sam.stack_embeddings import PredictorEmbedder, StackEmbeddings

    other = _image((3, 64, 64), seed=8)  # the store is for other data
    stack = StackEmbeddings.open(SliceSource(other), PredictorEmbedder(
        store_ready(disc_predictor()), (0.0, 1.0)), tmp_path / "other.zarr")  # fmt: skip
    for _ in embed_all(stack):
        pass
    viewer, widget, _made = _docked(make_napari_viewer, qtbot, _image((3, 64, 64), seed=9))
    c = widget.binding
    viewer.dims.set_current_step(0, 0)
    add_point(widget, qtbot, (0, 20, 20))
    key, status = widget.model_section.cache_key(), widget.model_section.status.text()
    layers = [(lay.name, np.asarray(lay.data).copy()) for lay in viewer.layers
              if hasattr(lay.data, "shape")]  # fmt: skip
    with qtbot.waitSignal(widget.embedding_finished, timeout=WAIT_MS):
        widget.model_section.open_embeddings(tmp_path / "other.zarr")
    errors = _said(notifications, "error")
    assert len(errors) == 1 and "not opened" in errors[0] and "the image data" in errors[0]
    assert widget.model_section.cache_key() == key and widget.model_section.status.text() == status
    assert all(np.array_equal(np.asarray(viewer.layers[name].data), data)
               for name, data in layers)  # fmt: skip
    assert len(c.points.data) == 1
    assert stack.is_done().all()  # the store on disk is kept as it was


def test_a_cache_folder_keeps_embeddings_for_the_next_session(
    make_napari_viewer, qtbot, notifications, tmp_path
):
    data = _image((3, 64, 64), seed=3)
    _viewer, widget, made = _docked(make_napari_viewer, qtbot, data)
    widget.model_section.folder_edit.setText(str(tmp_path))
    widget.model_section.folder_edit.editingFinished.emit()
    embed(widget, qtbot)
    assert _encodes(made) == 3 and len(list(tmp_path.glob("cells-*.zarr"))) == 1
    assert f"store per image in {tmp_path}" in widget.model_section.status.text()

    _viewer2, widget2, made2 = _docked(make_napari_viewer, qtbot, data.copy())
    widget2.model_section.set_cache_folder(tmp_path)
    embed(widget2, qtbot)  # opens the store, finds every slice there
    assert _encodes(made2) == 0 and "3 / 3 slices embedded" in widget2.model_section.status.text()
    assert not _said(notifications, "error")


def test_the_automatic_tab_runs_on_the_widgets_embeddings(make_napari_viewer, qtbot):
    viewer, widget, made = _docked(make_napari_viewer, qtbot, _image((64, 64), seed=4))
    assert [widget.tabs.tabText(i) for i in range(widget.tabs.count())] == [
        "Interactive", "Automatic", "Refine", "From my objects"]  # fmt: skip
    embed(widget, qtbot)
    assert _encodes(made) == 1
    panel = widget.auto_panel
    widget.tabs.setCurrentWidget(panel)
    # the disc stub's +-8 logits on a 16 x 16 grid, upsampled, have soft edges (stability
    # ~0.87 for its small discs): below the default 0.95, which would find nothing
    panel.set_config(panel.config().with_values(stability_score_thresh=0.8))
    n_layers = len(viewer.layers)
    with qtbot.waitSignal(panel.finished, timeout=WAIT_MS) as finished:
        qtbot.mouseClick(panel.run_button, LEFT)
    layer = finished.args[0]
    assert layer is not None and layer in viewer.layers and len(viewer.layers) == n_layers + 1
    assert layer.data.shape == (64, 64) and "objects" in panel.status.text()
    assert _encodes(made) == 1  # the image was not embedded a second time


def _fading_disc_stack():
    """(12, 64, 64): a bright disc (radius 6) at (32, 32), at full brightness on slices 0-5,
    then 23 % dimmer a slice: slowly enough to be followed, dim enough to be doubted."""
    rr, cc = np.mgrid[:64, :64]
    disc = (rr - 32) ** 2 + (cc - 32) ** 2 <= 36
    data = np.random.default_rng(0).normal(100, 1, (12, 64, 64)).astype(np.float32)
    for z in range(12):
        data[z][disc] += 1000 * 0.77 ** max(z - 5, 0)
    return data


def test_doubtful_slices_are_listed_and_a_correction_carries_on_from_there(
    make_napari_viewer, qtbot, notifications
):
    viewer, widget, _made = _docked(make_napari_viewer, qtbot, _fading_disc_stack())
    c = widget.binding
    assert not widget.stack_section.doubtful_combo.isVisible()
    viewer.dims.set_current_step(0, 5)
    add_point(widget, qtbot, (5, 32, 32))
    widget.prompt_section.label_spin.setValue(4)
    _propagate(widget, qtbot)
    first = np.asarray(c.output.data).copy()
    assert all(first[z].any() for z in range(12))  # followed through the slow fade
    doubted = [widget.stack_section.doubtful_combo.itemData(i)[3] for i in range(widget.stack_section.doubtful_combo.count())]
    assert doubted and min(doubted) >= 8  # the dimmest slices, and only those
    assert "doubtful: z" in " ".join(_said(notifications, "info"))

    # go to the first doubtful slice: it is shown, and the object is set up to be refined
    widget.stack_section.doubtful_combo.setCurrentIndex(doubted.index(min(doubted)))
    qtbot.mouseClick(widget.stack_section.doubtful_button, LEFT)
    at = min(doubted)
    assert viewer.dims.current_step[0] == at and widget.prompt_section.refine_spin.value() == 4
    # the correction: the object ends two slices further (only negative points there)
    add_point(widget, qtbot, (at, 32, 32))
    add_point(widget, qtbot, (at + 2, 32, 32), negative=True)
    _propagate(widget, qtbot)
    out = np.asarray(c.output.data)
    np.testing.assert_array_equal(out[:at], first[:at])  # before the correction: untouched
    assert out[at].any() and out[at + 1].any()
    assert not out[at + 2 :].any()  # beyond where it stopped, the object's old pixels went
    _no_threads(qtbot)
    assert not _said(notifications, "error")
