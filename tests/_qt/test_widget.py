"""The Segment Anything widget in a real viewer under Xvfb, driven through its controls.

Uses the bundled model (the default entry of the model picker) on the plugin's samples.
"""

from __future__ import annotations

import numpy as np
from _widget_helpers import (
    EMBED_TIMEOUT_MS,
    add_point,
    component_at,
    dock,
    embed,
    isolated_nuclei,
    use_disc_model,
)
from napari.layers import Labels, Points, Shapes
from qtpy.QtCore import Qt

from napari_sam.automatic import PRESETS

LEFT = Qt.MouseButton.LeftButton


def _sample_2d(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-sam", "nuclei_2d")
    return viewer, dock(viewer, qtbot)


def test_widget_makes_prompt_layers_and_lists_models(make_napari_viewer, qtbot):
    viewer, widget = _sample_2d(make_napari_viewer, qtbot)
    c = widget.binding
    assert isinstance(c.points, Points) and isinstance(c.shapes, Shapes)
    assert isinstance(c.preview, Labels) and isinstance(c.output, Labels)
    assert c.preview.data.shape == c.output.data.shape == (512, 512)
    assert widget.prompt_section.output_combo.layer() is c.output
    assert viewer.layers.selection.active is c.points and c.points.mode == "add"
    labels = [widget.model_section.model_combo.itemText(i) for i in range(widget.model_section.model_combo.count())]
    assert labels[0].startswith("bundled") and labels[-1] == "from file..."
    assert any(t.startswith("vit_b ") and "(download" in t for t in labels)
    # weights nobody published a SHA-256 for are never downloaded: the picker says so
    assert any(t.startswith("vit_b_lm ") and "no published SHA-256" in t for t in labels)
    assert not widget.stack_section.propagate_button.isEnabled()  # a 2D image has no stack
    assert widget.stack_section.propagate_button.toolTip()
    # the Automatic tab starts from the preset made for the chosen model
    assert widget.auto_panel.preset.currentText() == "nuclei-bundled"
    widget.model_section.model_combo.setCurrentIndex(next(i for i, t in enumerate(labels)
                                            if t.startswith("vit_b ")))  # fmt: skip
    assert widget.auto_panel.preset.currentText() == "default"
    widget.model_section.model_combo.setCurrentIndex(0)
    assert widget.auto_panel.config() == PRESETS["nuclei-bundled"]


def test_point_commit_second_object_and_undo(make_napari_viewer, qtbot, nuclei_truth):
    _viewer, widget = _sample_2d(make_napari_viewer, qtbot)
    c = widget.binding
    embed(widget, qtbot)
    assert "image embedded" in widget.model_section.status.text()
    (p1, _), (p2, _) = isolated_nuclei(nuclei_truth, 2)

    add_point(widget, qtbot, p1)
    preview = np.asarray(c.preview.data) > 0
    region = component_at(preview, p1)
    assert region[p1] and 20 < region.sum() < 0.1 * preview.size
    first = preview.copy()

    # a negative point on the object's edge changes the preview; it is drawn differently
    edge = (p1[0] + 6, p1[1] + 6)
    add_point(widget, qtbot, edge, negative=True)
    assert not np.array_equal(np.asarray(c.preview.data) > 0, first)
    assert list(c.points.features["positive"]) == [True, False]
    assert c.points.symbol[0] != c.points.symbol[1]
    qtbot.mouseClick(widget.prompt_section.negative_button, LEFT)  # back to positive points

    add_point(widget, qtbot, p1)  # the preview follows the prompts: commit this state
    shown = np.asarray(c.preview.data) > 0
    qtbot.mouseClick(widget.prompt_section.commit_button, LEFT)
    out = np.asarray(c.output.data)
    assert set(np.unique(out)) == {0, 1}
    assert np.array_equal(out == 1, shown)
    assert not np.asarray(c.preview.data).any() and len(c.points.data) == 0
    one = out == 1

    add_point(widget, qtbot, p2)
    qtbot.mouseClick(widget.prompt_section.commit_button, LEFT)
    out = np.asarray(c.output.data)
    assert set(np.unique(out)) == {0, 1, 2}
    assert np.array_equal(out == 1, one)
    assert out[p2] == 2

    c.output.undo()  # Ctrl+Z on the output layer
    out = np.asarray(c.output.data)
    assert set(np.unique(out)) == {0, 1} and np.array_equal(out == 1, one)


def test_chosen_label_id_and_clear(make_napari_viewer, qtbot, nuclei_truth):
    _viewer, widget = _sample_2d(make_napari_viewer, qtbot)
    c = widget.binding
    embed(widget, qtbot)
    ((p1, _),) = isolated_nuclei(nuclei_truth, 1)
    add_point(widget, qtbot, p1)
    qtbot.mouseClick(widget.prompt_section.clear_button, LEFT)
    assert len(c.points.data) == 0 and not np.asarray(c.preview.data).any()
    add_point(widget, qtbot, p1)
    widget.prompt_section.label_spin.setValue(7)
    qtbot.mouseClick(widget.prompt_section.commit_button, LEFT)
    assert set(np.unique(c.output.data)) == {0, 7}


def test_boxes_become_objects_in_one_commit(make_napari_viewer, qtbot, nuclei_truth):
    _viewer, widget = _sample_2d(make_napari_viewer, qtbot)
    use_disc_model(widget, image_size=512)  # fills a box to within a few pixels
    c = widget.binding
    embed(widget, qtbot)
    nuclei = isolated_nuclei(nuclei_truth, 3)

    def box(lab):
        rr, cc = np.nonzero(nuclei_truth == lab)
        return np.array([[rr.min() - 3, cc.min() - 3], [rr.max() + 3, cc.max() + 3]], float)

    with qtbot.waitSignal(widget.preview_updated, timeout=EMBED_TIMEOUT_MS):
        c.shapes.add_rectangles(box(nuclei[0][1]))
    preview = np.asarray(c.preview.data)
    (r0, c0), (r1, c1) = box(nuclei[0][1]).astype(int)
    inside = preview[r0 : r1 + 1, c0 : c1 + 1] > 0
    assert inside.any() and inside.sum() > 0.5 * (preview > 0).sum()

    with qtbot.waitSignal(widget.preview_updated, timeout=EMBED_TIMEOUT_MS):
        c.shapes.add_rectangles([box(lab) for _, lab in nuclei[1:]])
    assert set(np.unique(c.preview.data)) <= {0, 1, 2, 3}
    qtbot.mouseClick(widget.prompt_section.commit_button, LEFT)
    out = np.asarray(c.output.data)
    # one object per box, each covering its own nucleus and lying within its box (give or
    # take the few pixels of upsampling the low-res mask)
    ids = [int(np.bincount(out[nuclei_truth == lab]).argmax()) for _, lab in nuclei]
    assert 0 not in ids and len(set(ids)) == len(nuclei) == 3
    assert set(np.unique(out)) == {0, *ids}
    for (_, lab), i in zip(nuclei, ids):
        assert (out[nuclei_truth == lab] == i).mean() > 0.95
        rr, cc = np.nonzero(out == i)
        (r0, c0), (r1, c1) = box(lab) + np.array([[-3], [3]])
        assert r0 <= rr.min() and rr.max() <= r1 and c0 <= cc.min() and cc.max() <= c1
    assert len(c.shapes.data) == 0
    c.output.undo()  # many objects, one undo step
    assert not np.asarray(c.output.data).any()


def test_a_large_object_then_a_small_one_show_exactly(make_napari_viewer, qtbot):
    from napari_sam.layer_binding import WHOLE_REFRESH_PIXELS

    viewer, widget = _sample_2d(make_napari_viewer, qtbot)
    use_disc_model(widget, image_size=512, radius=4)  # one tile, like the bundled model
    c = widget.binding
    embed(widget, qtbot)
    visual = viewer.window._qt_viewer.canvas.layer_to_visual[c.preview]

    def drawn() -> np.ndarray:  # what the preview's vispy node was last given to draw
        return np.asarray(visual.node._data) > 0

    with qtbot.waitSignal(widget.preview_updated, timeout=EMBED_TIMEOUT_MS):
        c.shapes.add_rectangles(np.array([[40.0, 40.0], [470.0, 470.0]]))  # ~185k pixels
    big = np.asarray(c.preview.data) > 0
    assert big.sum() > WHOLE_REFRESH_PIXELS and big[40:471, 40:471].mean() > 0.95
    assert np.array_equal(drawn(), big)
    c.shapes.data = []  # the box goes; a point prompts a small object instead
    add_point(widget, qtbot, (256, 256))
    small = np.asarray(c.preview.data) > 0
    assert small[256, 256] and small.sum() < 0.1 * big.sum()
    assert np.array_equal(drawn(), small)


def test_refine_an_object_of_the_output(make_napari_viewer, qtbot, nuclei_truth):
    _viewer, widget = _sample_2d(make_napari_viewer, qtbot)
    c = widget.binding
    embed(widget, qtbot)
    ((p1, _),) = isolated_nuclei(nuclei_truth, 1)
    add_point(widget, qtbot, p1)
    qtbot.mouseClick(widget.prompt_section.commit_button, LEFT)
    before = np.asarray(c.output.data).copy()
    c.output.selected_label = 1
    with qtbot.waitSignal(widget.preview_updated, timeout=EMBED_TIMEOUT_MS):
        qtbot.mouseClick(widget.prompt_section.pick_button, LEFT)  # refine label 1: its mask is the prompt
    assert widget.prompt_section.refine_spin.value() == 1
    assert np.asarray(c.preview.data).any()
    add_point(widget, qtbot, (p1[0] + 5, p1[1]), negative=True)
    qtbot.mouseClick(widget.prompt_section.commit_button, LEFT)
    out = np.asarray(c.output.data)
    assert set(np.unique(out)) == {0, 1}  # label 1 replaced, no new object
    assert (out == 1).any() and not np.array_equal(out, before)
    assert widget.prompt_section.refine_spin.value() == 0  # refining ends with the commit


def test_stack_prompts_on_slice_k_write_only_slice_k(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-sam", "nuclei_3d")
    widget = use_disc_model(dock(viewer, qtbot))
    c = widget.binding
    assert c.points.ndim == 3 and c.output.data.shape == (32, 256, 256)
    k = 11
    viewer.dims.set_current_step(0, k)
    image = np.asarray(viewer.layers[0].data[k])
    r, col = np.unravel_index(np.argmax(image), image.shape)  # inside the brightest nucleus
    # the slice is embedded on first use (with progress), then decoded
    add_point(widget, qtbot, (k, r, col))
    assert "1 / 32 slices embedded (11)" in widget.model_section.status.text()
    preview = np.asarray(c.preview.data)
    assert preview[k].any() and not np.delete(preview, k, axis=0).any()
    qtbot.mouseClick(widget.prompt_section.commit_button, LEFT)
    out = np.asarray(c.output.data)
    assert out[k].any() and not np.delete(out, k, axis=0).any()

    # prompts follow the displayed slice: a point on slice k does not prompt slice k + 1
    add_point(widget, qtbot, (k, r, col))
    viewer.dims.set_current_step(0, k + 1)
    assert not np.asarray(c.preview.data).any()
    qtbot.waitUntil(widget.idle, timeout=60_000)  # no worker outlives the test


def test_cancel_embedding_then_embed_again(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-sam", "nuclei_3d")
    widget = dock(viewer, qtbot)
    qtbot.mouseClick(widget.model_section.embed_button, LEFT)
    assert not widget.model_section.progress.isHidden() and widget.model_section.cancel_button.isEnabled()
    key = widget.model_section.cache_key()
    qtbot.waitUntil(lambda: len(widget.embeddings.indices(key)) >= 1, timeout=EMBED_TIMEOUT_MS)
    with qtbot.waitSignal(widget.embedding_finished, timeout=EMBED_TIMEOUT_MS):
        qtbot.mouseClick(widget.model_section.cancel_button, LEFT)
    done = len(widget.embeddings.indices(key))
    assert 1 <= done < 32
    assert "cancelled" in widget.model_section.status.text()
    assert widget.model_section.progress.isHidden() and widget.model_section.embed_button.isEnabled()
    embed(widget, qtbot)
    assert len(widget.embeddings.indices(key)) == 32
    assert "32 / 32 slices embedded" in widget.model_section.status.text()


def test_no_image_and_wrong_layer_type_notify(make_napari_viewer, qtbot, notifications):
    viewer = make_napari_viewer()
    widget = dock(viewer, qtbot)
    qtbot.mouseClick(widget.model_section.embed_button, LEFT)
    assert any(s == "error" and "Image layer" in m for s, m in notifications)
    assert widget.model_section.embedding_running is False
    notifications.clear()
    viewer.add_labels(np.zeros((64, 64), np.int32), name="masks")
    qtbot.mouseClick(widget.model_section.embed_button, LEFT)
    assert any(s == "error" and "'masks' (Labels)" in m for s, m in notifications)
    assert [lay.name for lay in viewer.layers] == ["masks"]  # nothing added or changed
    assert not np.asarray(viewer.layers["masks"].data).any()


def test_output_of_the_wrong_shape_notifies_and_changes_nothing(
    make_napari_viewer, qtbot, notifications, nuclei_truth
):
    viewer, widget = _sample_2d(make_napari_viewer, qtbot)
    c = widget.binding
    embed(widget, qtbot)
    ((p1, _),) = isolated_nuclei(nuclei_truth, 1)
    add_point(widget, qtbot, p1)
    small = viewer.add_labels(np.zeros((64, 64), np.int32), name="small")
    widget.prompt_section.output_combo.set_layer(small)
    qtbot.mouseClick(widget.prompt_section.commit_button, LEFT)
    assert any(s == "error" and "shape" in m for s, m in notifications)
    assert not small.data.any() and np.asarray(c.preview.data).any()
    assert len(c.points.data) == 1


def test_zoom_choice_reaches_the_preview(make_napari_viewer, qtbot, nuclei_truth):
    # The bundled model zooms in on small objects by default ("auto"); "off" decodes them
    # in the whole image only. Switching redraws the preview, and zoomed masks of the
    # smallest isolated nuclei are at least as close to the truth.
    _viewer, widget = _sample_2d(make_napari_viewer, qtbot)
    c = widget.binding
    assert widget.prompt_section.zoom_combo.currentText() == "auto"
    embed(widget, qtbot)
    ious = {"off": [], "auto": []}
    for point, lab in isolated_nuclei(nuclei_truth, 100)[-3:]:
        truth = nuclei_truth == lab
        widget.prompt_section.zoom_combo.setCurrentText("off")
        add_point(widget, qtbot, point)
        previews = {"off": np.asarray(c.preview.data) > 0}
        with qtbot.waitSignal(widget.preview_updated, timeout=EMBED_TIMEOUT_MS):
            widget.prompt_section.zoom_combo.setCurrentText("auto")
        previews["auto"] = np.asarray(c.preview.data) > 0
        assert not np.array_equal(previews["off"], previews["auto"])
        for zoom, mask in previews.items():
            assert mask[point]
            ious[zoom].append((mask & truth).sum() / (mask | truth).sum())
        widget.prompt_section.clear()
    assert np.mean(ious["auto"]) >= np.mean(ious["off"]), ious


def test_the_candidate_key_cycles_through_sams_masks_with_their_predicted_iou(
    make_napari_viewer, qtbot
):
    """M on the points layer shows candidate 0, 1, 2, 3, then the mask choice again; the
    label beside *mask* gives the shown candidate's predicted IoU; commit writes it. The
    disc stand-in's candidates are discs of 1, 2 and 3 radii (predicted IoU 0.9, 0.5, 0.3;
    the single-mask output is the first)."""
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((64, 64), np.float32), name="blank")
    widget = use_disc_model(dock(viewer, qtbot), image_size=64, radius=4)
    p, c = widget.prompt_section, widget.binding
    p.zoom_combo.setCurrentText("off")
    embed(widget, qtbot)
    add_point(widget, qtbot, (32, 32))
    from napari.utils.key_bindings import KeyBinding

    press_m = c.points.keymap[KeyBinding.from_str("m")]  # the key bound on the points layer
    areas, labels = [], []
    for _ in range(4):
        with qtbot.waitSignal(widget.preview_updated, timeout=60_000):
            press_m(c.points)
        areas.append(int(np.count_nonzero(c.preview.data)))
        labels.append(p.candidate_label.text())
    assert labels == ["candidate 0: predicted IoU 0.90", "candidate 1: predicted IoU 0.90",
                      "candidate 2: predicted IoU 0.50", "candidate 3: predicted IoU 0.30"]
    assert areas[0] == areas[1] < areas[2] < areas[3]
    assert p.commit() == [1]
    assert int(np.count_nonzero(c.output.data)) == areas[3]  # the candidate shown
    assert p.candidate is None  # the next object starts from the mask choice
