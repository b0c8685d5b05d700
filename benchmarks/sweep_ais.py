"""Which AIS settings suit a model: F1 at IoU 0.5 of the watershed on the instance decoder's
maps, first with the model's own post-processing for each halo of the magnified tiles
(``--halos``), then for a grid of (foreground threshold, centre and boundary distance
thresholds, distance smoothing, minimum size) at the model's own halo, on the foreign nuclei,
ours and the package's sample, with the model's own settings in the same run.

Each image's maps are computed once, as automatic mode computes them (the model's own
magnification and tiling, its precision); every setting then runs only the watershed
(``instances_from_distances``). Settings are ranked by the lowest F1 of the three sets, then
those below the model's own settings on no set by their mean gain: a default is chosen on all
of them, never on one.

    .venv/bin/python benchmarks/sweep_ais.py [--threads 2] [--precision auto] [--top 12]
                                             [--halos 16,24,32,40,64]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools

import numpy as np
import torch
from bench_auto import f1_from, match_counts
from bench_foreign import DEFAULT_FOREIGN, cpu_line, foreign_2d, ours_2d

from napari_sam.automatic import auto_config
from napari_sam.automatic.decoder_plane import plane_maps
from napari_sam.automatic.instances import InstanceSettings, instances_from_distances
from napari_sam.automatic.run import plane_embeddings, tile_embeddings
from napari_sam.jobs import drain
from napari_sam.predictor import Predictor
from napari_sam.sample_data import synthetic_2d

FOREGROUND = (0.3, 0.4, 0.5, 0.6)
CENTRE = (0.3, 0.4, 0.5, 0.6, 0.7)
BOUNDARY = (0.3, 0.4, 0.5, 0.6)
SMOOTHING = (0.5, 1.0, 1.6, 2.0)
MIN_SIZE = (10, 25, 50)


def maps_of(predictor: Predictor, image: np.ndarray, magnification: float,
            halo: int | None) -> np.ndarray:  # fmt: skip
    """(3, H, W) decoder maps of a 2D image, as ``segment_everything`` computes them."""
    embeddings = plane_embeddings(predictor, image, magnification, magnified_halo=halo)
    return drain(plane_maps(predictor, embeddings.grid, tile_embeddings(embeddings, 0)))


def f1_with(sets: dict[str, list], settings: InstanceSettings) -> dict[str, float]:
    """Pooled F1 per set of [(truth, maps)]."""
    return {name: f1_from([match_counts(instances_from_distances(*maps, settings), truth)
                           for truth, maps in items]) for name, items in sets.items()}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--halos", default="16,24,32,40,64", help="magnified tiles' halos, px")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(cpu_line())
    predictor = Predictor.load("bundled", device="cpu", precision=args.precision)
    own = auto_config(predictor, "ais")
    print(f"bundled model, precision {args.precision} ({predictor.model.compute_dtype}); "
          f"magnification {own.magnification}, halo {own.magnified_halo}; own settings "
          f"{own.instances}")  # fmt: skip
    sample = synthetic_2d()
    images = {"foreign": foreign_2d(DEFAULT_FOREIGN), "ours": ours_2d(),
              "sample": [(sample.image, sample.labels)]}  # fmt: skip
    print("the model's own post-processing, per halo of the magnified tiles:")
    for halo in (int(h) for h in args.halos.split(",")):
        at = {name: [(truth, maps_of(predictor, image, own.magnification, halo))
                     for image, truth in items] for name, items in images.items()}  # fmt: skip
        print(f"  halo {halo:>3}" + "".join(f"{n:>9} {f:.3f}" for n, f in f1_with(at, own.instances).items()),
              flush=True)  # fmt: skip
    sets = {name: [(truth, maps_of(predictor, image, own.magnification, own.magnified_halo))
                   for image, truth in items] for name, items in images.items()}  # fmt: skip
    rows = []
    for fg, centre, boundary, sigma, size in itertools.product(
        FOREGROUND, CENTRE, BOUNDARY, SMOOTHING, MIN_SIZE
    ):
        settings = dataclasses.replace(
            own.instances, foreground_threshold=fg, center_distance_threshold=centre,
            boundary_distance_threshold=boundary, distance_smoothing=sigma, min_size=size,
        )  # fmt: skip
        rows.append((f1_with(sets, settings), settings))
    base = f1_with(sets, own.instances)
    header = f"{'fg':>5}{'centre':>8}{'bound':>7}{'sigma':>7}{'min':>5}" + "".join(
        f"{name:>10}" for name in sets
    )
    print(header)

    def line(f1: dict, s: InstanceSettings, tag: str = "") -> str:
        return (f"{s.foreground_threshold:>5}{s.center_distance_threshold:>8}"
                f"{s.boundary_distance_threshold:>7}{s.distance_smoothing:>7}{s.min_size:>5}"
                + "".join(f"{f1[n]:>10.3f}" for n in sets) + tag)  # fmt: skip

    print(line(base, own.instances, "  (the model's own)"))
    print("ranked by the lowest F1 of the sets:")
    for f1, s in sorted(rows, key=lambda r: -min(r[0].values()))[: args.top]:
        print(line(f1, s))
    print("no set below the model's own, ranked by the mean gain:")
    better = [r for r in rows if all(r[0][n] >= base[n] for n in sets)]
    for f1, s in sorted(better, key=lambda r: -sum(r[0][n] - base[n] for n in sets))[: args.top]:
        print(line(f1, s))


if __name__ == "__main__":
    main()
