"""Drive a real napari viewer with the scripting API: click-like points and a box in, labels
out, undo included.

    .venv/bin/python examples/segment_in_viewer.py [--model NAME|PATH] [--random-weights]
        [--no-show]

``--random-weights`` uses an untrained vit_nano (shape of the bundled model) so the script runs
without any weights file; masks are then meaningless but every step is exercised.
"""

from __future__ import annotations

import argparse

import napari
import numpy as np
import pandas as pd

import napari_sam


def make_session(args: argparse.Namespace, viewer: napari.Viewer) -> napari_sam.Session:
    if args.random_weights:
        import torch

        from napari_sam.model.sam import build_sam

        torch.manual_seed(0)
        return napari_sam.Session(napari_sam.Predictor(build_sam("vit_nano")), viewer)
    return napari_sam.Session.load(args.model, viewer=viewer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=None)
    parser.add_argument("--random-weights", action="store_true")
    parser.add_argument("--no-show", action="store_true")
    args = parser.parse_args()

    rr, cc = np.mgrid[:256, :320]
    image = np.zeros((256, 320), np.float32)
    for r, c, s in [(80, 90, 20), (170, 220, 28), (190, 70, 16)]:
        image += np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / (2 * s**2))
    image = (1000 + 3000 * image).astype(np.uint16)  # microscopy-like uint16

    viewer = napari.Viewer(show=not args.no_show)
    image_layer = viewer.add_image(image, name="nuclei", scale=(0.5, 0.5))  # 0.5 um pixels
    labels_layer = viewer.add_labels(np.zeros(image.shape, np.int32), scale=(0.5, 0.5))
    # Points are in world units (um): positive on a nucleus, negative on the background.
    points = viewer.add_points(
        np.array([[40.0, 45.0], [60.0, 10.0]]),
        features=pd.DataFrame({"positive": [True, False]}),
        name="clicks",
    )
    shapes = viewer.add_shapes(
        [np.array([[70.0, 90.0], [70.0, 130.0], [100.0, 130.0], [100.0, 90.0]])],
        shape_type="rectangle",
        name="boxes",
    )

    session = make_session(args, viewer)
    done = session.segment_layers(image_layer, labels_layer, points=points, shapes=shapes)
    for obj_id, score in zip(done.ids, done.prediction.scores):
        area = int(np.count_nonzero(labels_layer.data == obj_id))
        print(f"object {obj_id}: predicted IoU {score:.2f}, {area} pixels")
    labels_layer.undo()
    labels_layer.undo()
    print(f"after two undos: {int(np.count_nonzero(labels_layer.data))} labelled pixels")
    labels_layer.redo()
    labels_layer.redo()
    if not args.no_show:
        napari.run()
    viewer.close()


if __name__ == "__main__":
    main()
