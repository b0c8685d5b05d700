"""Interruptions in a real viewer: cancel, switch image, delete layers, close the viewer
while a worker runs, and an accelerator out of memory. Outcome each time: no exception, no
error notification, no worker thread left running, no layer half written.

The model is the disc stand-in (tests/stub_sam.py) behind the real predictor; its
encoder sleeps ``delay`` seconds per slice, in steps a cancelled job stops between.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _widget_helpers import docked_with_stub
from qtpy.QtCore import Qt, QThreadPool

from stub_sam import DiscSam, OnAcceleratorPredictor, fail_first_encodes

LEFT = Qt.MouseButton.LeftButton
WAIT_MS = 60_000
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")


def embed(widget, qtbot):
    with qtbot.waitSignal(widget.embedding_finished, timeout=WAIT_MS):
        qtbot.mouseClick(widget.model_section.embed_button, LEFT)


def add_point(widget, qtbot, coord):
    """Add a positive point and wait for the preview to follow it."""
    with qtbot.waitSignal(widget.preview_updated, timeout=WAIT_MS):
        widget.binding.points.add(np.asarray(coord, dtype=float))


def _stack(n, size=64, seed=0):
    return np.random.default_rng(seed).random((n, size, size)).astype(np.float32)


def _no_threads(qtbot):
    pool = QThreadPool.globalInstance()
    qtbot.waitUntil(lambda: pool.activeThreadCount() == 0, timeout=WAIT_MS)


def _errors(notifications):
    return [m for s, m in notifications if s == "error"]


def test_cancel_a_stack_embedding_keeps_finished_slices(make_napari_viewer, qtbot, notifications):
    _viewer, widget, made = docked_with_stub(make_napari_viewer, qtbot, _stack(20), delay=0.4)
    key = widget.model_section.cache_key()
    qtbot.mouseClick(widget.model_section.embed_button, LEFT)
    qtbot.waitUntil(lambda: len(widget.embeddings.indices(key)) >= 1, timeout=WAIT_MS)
    with qtbot.waitSignal(widget.embedding_finished, timeout=WAIT_MS):
        qtbot.mouseClick(widget.model_section.cancel_button, LEFT)
    _no_threads(qtbot)
    done = widget.embeddings.indices(key)
    assert 1 <= len(done) < 20 and made[0].model.encode_calls < 20
    assert "cancelled" in widget.model_section.status.text() and widget.model_section.embed_button.isEnabled()
    assert not _errors(notifications)


def test_switching_the_image_during_an_embedding(make_napari_viewer, qtbot, notifications):
    a, b = _stack(12, 64, seed=1), _stack(4, 48, seed=2)
    viewer, widget, _made = docked_with_stub(make_napari_viewer, qtbot, a, b, delay=0.3)
    layer_a, layer_b = viewer.layers[0], viewer.layers[1]
    key_a = widget.model_section.cache_key()
    qtbot.mouseClick(widget.model_section.embed_button, LEFT)
    qtbot.waitUntil(lambda: len(widget.embeddings.indices(key_a)) >= 1, timeout=WAIT_MS)
    widget.model_section.image_combo.set_layer(layer_b)  # while A's slices are still being embedded
    c = widget.binding
    qtbot.waitUntil(lambda: c.image is layer_b, timeout=5000)
    assert c.preview.data.shape == c.output.data.shape == b.shape
    if widget.model_section.embedding_running:
        with qtbot.waitSignal(widget.embedding_finished, timeout=WAIT_MS):
            pass
    # a prompt on B embeds B's slice (A's features are never used for B) and decodes there
    viewer.dims.set_current_step(0, 2)
    add_point(widget, qtbot, (2, 20, 20))
    job_size = c.masks[0].shape
    assert job_size == (48, 48) and c.masks_index == (2,)
    ids = widget.prompt_section.commit()
    out = np.asarray(c.output.data)
    assert ids == [1] and out[2].any() and not np.delete(out, 2, axis=0).any()
    assert not any(np.asarray(lay.data).any() for lay in viewer.layers
                   if lay.name.startswith("image0 objects"))  # fmt: skip
    assert layer_a in viewer.layers
    _no_threads(qtbot)
    assert not _errors(notifications)


def test_deleting_prompt_and_output_layers_during_live_segmentation(
    make_napari_viewer, qtbot, notifications
):
    image = np.random.default_rng(3).random((64, 64)).astype(np.float32)
    viewer, widget, _made = docked_with_stub(make_napari_viewer, qtbot, image)
    c = widget.binding
    embed(widget, qtbot)
    add_point(widget, qtbot, (20, 20))
    output, preview, points, shapes = c.output, c.preview, c.points, c.shapes

    # a decode in flight while the preview layer goes away
    points.add(np.array([40.0, 40.0]))
    viewer.layers.remove(preview)
    qtbot.waitUntil(lambda: not widget.prompt_section.decoder.busy, timeout=WAIT_MS)
    # the prompt layers go away: live segmentation stops asking, nothing breaks
    viewer.layers.remove(points)
    viewer.layers.remove(shapes)
    widget.prompt_section.request_preview()
    # the output goes away: committing says so and writes nothing anywhere
    viewer.layers.remove(output)
    assert widget.prompt_section.commit() == []
    assert any("output" in m for m in _errors(notifications))
    assert not np.asarray(output.data).any()
    notifications.clear()

    # the widget recovers: Embed (already done: nothing to compute) recreates the layers
    qtbot.mouseClick(widget.model_section.embed_button, LEFT)
    assert not widget.model_section.embedding_running
    assert c.layers_present() and c.output in viewer.layers and c.output is not output
    add_point(widget, qtbot, (30, 30))
    assert widget.prompt_section.commit() == [1]
    assert np.asarray(c.output.data)[30, 30] == 1
    _no_threads(qtbot)
    assert not _errors(notifications)


def test_closing_the_viewer_stops_a_running_embedding(make_napari_viewer, qtbot, notifications):
    viewer, widget, made = docked_with_stub(make_napari_viewer, qtbot, _stack(40), delay=0.5)
    key = widget.model_section.cache_key()
    qtbot.mouseClick(widget.model_section.embed_button, LEFT)
    qtbot.waitUntil(lambda: len(widget.embeddings.indices(key)) >= 1, timeout=WAIT_MS)
    viewer.close()
    _no_threads(qtbot)
    # the worker stopped at the close instead of embedding the other slices
    assert made[0].model.encode_calls < 40
    assert not _errors(notifications)


def test_accelerator_out_of_memory_falls_back_to_cpu_with_a_warning(
    make_napari_viewer, qtbot, notifications, monkeypatch
):
    """... and no worker thread touches the process-wide warning filters to say it
    (``warnings.catch_warnings`` is not thread safe)."""
    import sys
    import threading
    import warnings

    in_workers = []

    class Spy(warnings.catch_warnings):  # our code's uses (superqt's own worker has one)
        def __enter__(self):
            caller = sys._getframe(1).f_code.co_filename
            if threading.current_thread() is not threading.main_thread() and (
                    "napari_sam" in caller):  # fmt: skip
                in_workers.append(caller)
            return super().__enter__()

    monkeypatch.setattr(warnings, "catch_warnings", Spy)
    model = fail_first_encodes(
        DiscSam(), torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.00 GiB")
    )
    image = np.random.default_rng(4).random((64, 64)).astype(np.float32)
    _viewer, widget, made = docked_with_stub(
        make_napari_viewer,
        qtbot,
        image,
        loader=lambda: OnAcceleratorPredictor(model, weights_id="d"),
    )
    embed(widget, qtbot)
    warnings = [m for s, m in notifications if s == "warning"]
    assert any("out of memory" in m and "CPU" in m for m in warnings), notifications
    assert "model moved to the CPU" in widget.model_section.status.text()
    assert "image embedded" in widget.model_section.status.text()
    assert made[0].device.type == "cpu"
    add_point(widget, qtbot, (32, 32))
    assert widget.prompt_section.commit() == [1]
    _no_threads(qtbot)
    assert not _errors(notifications)
    assert in_workers == []


def test_decode_out_of_memory_falls_back_to_cpu_with_a_warning(
    make_napari_viewer, qtbot, notifications
):
    image = np.random.default_rng(6).random((64, 64)).astype(np.float32)
    _viewer, widget, made = docked_with_stub(
        make_napari_viewer,
        qtbot,
        image,
        loader=lambda: OnAcceleratorPredictor(DiscSam(), weights_id="d"),
    )
    embed(widget, qtbot)
    predictor = made[0]
    decode = predictor._decode

    def out_of_memory_on_the_accelerator(embedding, prompts, multimask=None):
        if predictor.device.type != "cpu":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return decode(embedding, prompts, multimask)

    predictor._decode = out_of_memory_on_the_accelerator
    add_point(widget, qtbot, (32, 32))
    warnings = [m for s, m in notifications if s == "warning"]
    assert any("Segmentation" in m and "out of memory" in m and "CPU" in m for m in warnings)
    assert predictor.device.type == "cpu"
    assert np.asarray(widget.binding.preview.data)[32, 32] == 1
    assert widget.prompt_section.commit() == [1]
    _no_threads(qtbot)
    assert not _errors(notifications)


def test_a_preview_growing_past_the_previous_one(make_napari_viewer, qtbot, notifications):
    image = np.random.default_rng(5).random((64, 64)).astype(np.float32)
    _viewer, widget, _made = docked_with_stub(make_napari_viewer, qtbot, image)
    c = widget.binding
    embed(widget, qtbot)
    add_point(widget, qtbot, (20, 20))
    add_point(widget, qtbot, (50, 50))  # was: IndexError drawing into the old, smaller region
    preview = np.asarray(c.preview.data)
    assert preview[20, 20] == preview[50, 50] == 1
    assert not _errors(notifications)
