"""Soak: 1,000 prompt / commit cycles in a real viewer on a stack. Memory stays flat (the
resident set at the start and the end is printed), every commit is one undo step, and
every object gets its own label id.

The model is the disc stand-in (tests/stub_sam.py) behind the real predictor, every slice
embedded first, so a cycle costs the widget's own work: a point, a decode on the worker,
the preview, a commit, an undo and a redo.
"""

from __future__ import annotations

import gc
import os

import numpy as np
from _widget_helpers import dock
from qtpy.QtCore import Qt, QThreadPool

from napari_sam.model_choice import ModelChoice
from stub_sam import disc_predictor

CYCLES = int(os.environ.get("SOAK_CYCLES", 1000))
WARM_UP = min(50, CYCLES // 4)  # cycles before the baseline (first draws, caches, Qt allocations)
MAX_GROWTH_MB = 50
WAIT_MS = 60_000
SPACING = 10  # pixels between prompted objects


def _rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_soak_1000_prompt_commit_cycles(make_napari_viewer, qtbot, report_line):
    grid = [(r, c) for r in range(6, 64 - 4, SPACING) for c in range(6, 64 - 4, SPACING)]
    n_slices = -(-CYCLES // len(grid))
    data = np.random.default_rng(0).random((n_slices, 64, 64)).astype(np.float32)
    viewer = make_napari_viewer()
    viewer.add_image(data, name="stack")
    widget = dock(viewer, qtbot)
    widget.model_section.add_model(ModelChoice("disc stub", loader=lambda d, p: disc_predictor(), key="disc"))
    c = widget.binding
    qtbot.waitUntil(lambda: c.points is not None, timeout=5000)
    with qtbot.waitSignal(widget.embedding_finished, timeout=WAIT_MS):
        qtbot.mouseClick(widget.model_section.embed_button, Qt.MouseButton.LeftButton)
    assert len(widget.embeddings.indices(widget.model_section.cache_key())) == n_slices

    output = c.output
    ids_seen: list[int] = []
    rss = {"start": _rss_mb()}
    for cycle in range(CYCLES):
        if cycle == WARM_UP:
            gc.collect()
            rss["baseline"] = _rss_mb()
        k, (r, col) = divmod(cycle, len(grid))[0], grid[cycle % len(grid)]
        if viewer.dims.current_step[0] != k:
            viewer.dims.set_current_step(0, k)
        before = np.array(output.data[k])
        with qtbot.waitSignal(widget.preview_updated, timeout=WAIT_MS):
            c.points.add(np.array([k, r, col], dtype=float))
        ids = widget.prompt_section.commit()
        assert len(ids) == 1, f"cycle {cycle}: committed {ids}"
        after = np.array(output.data[k])
        assert after[r, col] == ids[0] and not (before == ids[0]).any()
        assert np.array_equal(after[after != before], np.full((after != before).sum(), ids[0]))
        ids_seen.append(ids[0])
        output.undo()  # one commit, one undo step
        assert np.array_equal(output.data[k], before), f"cycle {cycle}: undo"
        output.redo()
        assert np.array_equal(output.data[k], after), f"cycle {cycle}: redo"
        assert len(c.points.data) == 0 and not np.asarray(c.preview.data).any()
    gc.collect()
    rss["end"] = _rss_mb()

    assert len(set(ids_seen)) == CYCLES and ids_seen == list(range(1, CYCLES + 1))
    present = np.unique(np.asarray(output.data))
    assert set(present.tolist()) == {0, *ids_seen}  # every object is still there
    growth = rss["end"] - rss["baseline"]
    report_line(
        f"{CYCLES} cycles; resident set {rss['start']:.0f} MB at the start, "
        f"{rss['baseline']:.0f} MB after {WARM_UP} cycles, {rss['end']:.0f} MB at the end "
        f"(growth {growth:+.1f} MB after warm-up, {rss['end'] - rss['start']:+.1f} MB in all)"
    )
    assert growth < MAX_GROWTH_MB
    pool = QThreadPool.globalInstance()
    qtbot.waitUntil(lambda: pool.activeThreadCount() == 0, timeout=WAIT_MS)
