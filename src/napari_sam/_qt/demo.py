"""``python -m napari_sam._qt.demo``: napari with the plugin docked on the 2D nuclei sample.

With ``--screenshot PATH`` (what ``make demo`` uses where there is no display) it renders the
window once, writes the screenshot, prints its path and exits.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--screenshot", type=Path, help="write a screenshot here and exit")
    args = parser.parse_args(argv)

    import napari

    viewer = napari.Viewer(title="napari-sam demo")
    viewer.open_sample("napari-sam", "nuclei_2d")
    viewer.window.add_plugin_dock_widget("napari-sam", "Segment Anything")
    if args.screenshot is None:
        napari.run()
        return 0
    from qtpy.QtWidgets import QApplication

    for _ in range(5):
        QApplication.processEvents()
    args.screenshot.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(args.screenshot), canvas_only=False)
    viewer.close()
    print(args.screenshot.resolve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
