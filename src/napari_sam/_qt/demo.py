"""``python -m napari_sam._qt.demo``: napari with the plugin docked on the 2D nuclei sample,
the image embedded and one nucleus segmented from a positive point (shown in the preview).

With ``--screenshot PATH`` (what ``make demo`` uses where there is no display) it renders the
window once the object is segmented, writes the screenshot, prints its path and exits.
``--commit`` also commits the object into the output layer and prompts a second one.
``--stack`` uses the 3D sample instead: a point on one nucleus of slice 16, then *Segment
through stack*; the screenshot shows a slice a few planes away with the propagated object.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--screenshot", type=Path, help="write a screenshot here and exit")
    parser.add_argument("--commit", action="store_true", help="commit one object first")
    parser.add_argument("--stack", action="store_true", help="propagate through the 3D sample")
    args = parser.parse_args(argv)

    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(title="napari-sam demo")
    viewer.open_sample("napari-sam", "nuclei_3d" if args.stack else "nuclei_2d")
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-sam", "Segment Anything")
    if args.screenshot is not None:
        viewer.window.resize(1500, 950)
    _wait(lambda: widget.binding.points is not None)
    if args.stack:
        _through_stack(viewer, widget)
    else:
        points = [(313, 324), (284, 427)]  # two nuclei of the sample
        if args.commit:
            _segment(widget, points[1])
            widget.prompt_section.commit()
        _segment(widget, points[0])
    if args.screenshot is None:
        napari.run()
        return 0
    for _ in range(5):
        QApplication.processEvents()
    args.screenshot.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(args.screenshot), canvas_only=False)
    viewer.close()
    print(args.screenshot.resolve())
    return 0


def _wait(condition, timeout_s: float = 600.0) -> None:
    import time

    from qtpy.QtWidgets import QApplication

    start = time.perf_counter()
    while not condition() and time.perf_counter() - start < timeout_s:
        QApplication.processEvents()
        time.sleep(0.01)


def _segment(widget, point_rc) -> None:
    """Add a positive point as a click does, and wait for the preview (embeds first)."""
    import numpy as np

    updated = []
    widget.preview_updated.connect(lambda: updated.append(1))
    widget.binding.points.add(np.asarray(point_rc, dtype=float))
    _wait(lambda: updated)


def _through_stack(viewer, widget, k: int = 16) -> None:
    """A point on the brightest nucleus of slice ``k``, propagated through z; then show
    slice ``k + 3``."""
    import numpy as np

    image = widget.binding.image
    viewer.dims.set_current_step(0, k)
    plane = np.asarray(image.data[k])
    r, c = np.unravel_index(np.argmax(plane), plane.shape)
    _segment(widget, (k, r, c))
    done = []
    widget.propagation_finished.connect(lambda: done.append(1))
    widget.stack_section.propagate()
    _wait(lambda: done)
    viewer.dims.set_current_step(0, k + 3)


if __name__ == "__main__":
    raise SystemExit(main())
