"""Fixtures for the widget tests: a real viewer with the widget docked from the manifest."""

from __future__ import annotations

import pytest


@pytest.fixture
def notifications():
    """Messages of the napari notifications shown during the test, as (severity, text)."""
    from napari.utils.notifications import notification_manager

    seen: list[tuple[str, str]] = []

    def record(event):
        note = event if hasattr(event, "severity") else getattr(event, "value", event)
        seen.append((str(note.severity), str(note.message)))

    notification_manager.notification_ready.connect(record)
    yield seen
    notification_manager.notification_ready.disconnect(record)


@pytest.fixture(scope="session")
def nuclei_truth():
    """Ground-truth labels of the 2D sample."""
    from napari_sam.sample_data import synthetic_2d

    return synthetic_2d().labels


@pytest.fixture(autouse=True)
def _workers_finish_before_teardown(make_napari_viewer, qtbot):
    """Every worker a test started ends (and its queued signals are delivered) while that
    test's widgets still exist: a late signal into a deleted widget crashes the process.
    It depends on ``make_napari_viewer`` so that it is set up after it and so torn down
    before the viewers are closed (an autouse fixture alone is torn down after them)."""
    yield
    from qtpy.QtCore import QThreadPool

    assert QThreadPool.globalInstance().waitForDone(60_000), "a worker did not finish"
    qtbot.wait(50)
