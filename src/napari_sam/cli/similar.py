"""``napari-sam similar IMAGE --exemplars LABELS.tif -o OUT.tif``: every object like the
examples (:mod:`napari_sam.automatic.similar`).

The objects of LABELS.tif (or those named by ``--ids``) are the examples; ``--rejected`` gives
objects that are not wanted (negative examples). OUT.tif holds the examples' labels unchanged
plus the objects found, with new ids; no committed pixel changes. IMAGE may be a stack (each
slice searched; objects on adjacent slices linked) or a folder: then the examples belong to
``--exemplar-image`` (default: the folder's image whose name begins LABELS's name), every
image of the folder is searched, and ``-o`` names a folder (one OUT/<name>.tif per image).
Finding nothing new exits with :data:`~napari_sam.cli.auto.NOTHING_FOUND`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from napari_sam.cli.inputs import add_image_options, open_input
from napari_sam.cli.progress import progress_of

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".npy")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "similar", help="find every object like a few example objects",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("image", type=Path, help="TIFF, PNG, zarr or npy image, or a folder")
    parser.add_argument("--exemplars", type=Path, required=True,
                        help="LABELS.tif: the example objects (instance labels of the image)")
    parser.add_argument("--ids", type=int, nargs="+", default=None,
                        help="only these objects of LABELS.tif are examples (default: all)")
    parser.add_argument("--rejected", type=Path, default=None,
                        help="labels of objects that are not wanted (negative examples)")
    parser.add_argument("--exemplar-image", type=Path, default=None,
                        help="with a folder: the image the examples belong to")
    parser.add_argument("-o", "--output", type=Path, required=True,
                        help="OUT.tif (a folder when IMAGE is a folder)")
    parser.add_argument("--model", default=None, help="weights name or file (default: bundled)")
    parser.add_argument("--device", default="auto", choices=("auto", "cuda", "mps", "cpu"))
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    add_image_options(parser)
    parser.add_argument("--contrast", nargs=2, type=float, metavar=("LOW", "HIGH"),
                        help="contrast limits (default: percentiles sampled per image)")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.set_defaults(func=run)


def _labels(path: Path, name: str) -> np.ndarray:
    import tifffile

    labels = np.asarray(tifffile.imread(path))
    if labels.dtype.kind not in "iu":
        raise ValueError(f"{name} {path} holds {labels.dtype} values, not integer labels")
    return labels


def is_folder(path: Path) -> bool:
    """A folder of images, not a zarr store (which is a directory too)."""
    stores = (".zarray", ".zgroup", "zarr.json")
    return (path.is_dir() and path.suffix.lower() != ".zarr"
            and not any((path / name).exists() for name in stores))  # fmt: skip


def folder_images(folder: Path, *labels: Path | None) -> list[Path]:
    """The images of ``folder`` (``*_labels.*`` and the given label files left out)."""
    skip = {p.resolve() for p in labels if p is not None}
    return sorted(p for p in folder.iterdir()
                  if p.suffix.lower() in IMAGE_SUFFIXES and not p.stem.endswith("_labels")
                  and p.resolve() not in skip)  # fmt: skip


def exemplar_image_of(images: list[Path], exemplars: Path) -> Path:
    """The image whose name the examples' file name begins with (the longest such)."""
    owners = [p for p in images if exemplars.stem.startswith(p.stem)]
    if not owners:
        raise ValueError(f"no image of the folder is named like {exemplars.name}: give "
                         "--exemplar-image")  # fmt: skip
    return max(owners, key=lambda p: len(p.stem))


def run(args: argparse.Namespace) -> int:
    import tifffile

    from napari_sam.automatic.run import plane_embeddings
    from napari_sam.automatic.similar import exemplars_from_labels, find_similar, similar_settings
    from napari_sam.cli.auto import NOTHING_FOUND
    from napari_sam.predictor import Predictor

    committed = _labels(args.exemplars, "--exemplars")
    rejected = _labels(args.rejected, "--rejected") if args.rejected else None
    folder = is_folder(args.image)
    images = folder_images(args.image, args.exemplars, args.rejected) if folder else [args.image]
    if folder and not images:
        raise ValueError(f"{args.image} holds no image ({', '.join(IMAGE_SUFFIXES)})")
    if folder and args.output.resolve() == args.image.resolve():
        raise ValueError("-o names the input folder: the images would be overwritten; give "
                         "another folder")  # fmt: skip
    stems = [p.stem for p in images]
    if len(set(stems)) < len(stems):
        raise ValueError(f"two images of {args.image} share a name ({', '.join(sorted(stems))}"
                         "): their outputs would overwrite each other")  # fmt: skip
    owner = args.exemplar_image or (exemplar_image_of(images, args.exemplars) if folder
                                    else args.image)  # fmt: skip
    predictor = Predictor.load(args.model, device=args.device, precision=args.precision)
    settings = similar_settings(predictor)
    contrast = tuple(args.contrast) if args.contrast else None

    def source_of(path: Path):
        found = open_input(path, rgb=bool(args.rgb), channel=args.channel)
        return found.slice_source(contrast=contrast)

    source, limits = source_of(owner)
    embeddings = plane_embeddings(predictor, source.data, settings.magnification,
                                  rgb=source.rgb, contrast_limits=limits)  # fmt: skip
    exemplars = exemplars_from_labels(embeddings, committed, args.ids, rejected)
    progress = progress_of(args)
    found_any = False
    for path in images:
        own = path.resolve() == owner.resolve()
        source, limits = (source, limits) if own and not folder else source_of(path)
        progress.start(f"finding in {path.name}", "steps", resume="rerun the same command")
        found = find_similar(predictor, source.data, committed if own else None, exemplars,
                             settings, progress, rgb=source.rgb, contrast_limits=limits,
                             embeddings=embeddings if own else None)  # fmt: skip
        progress.close()
        base = committed if own else np.zeros(found.shape, committed.dtype)
        out = np.where(found > 0, found, base)
        n = int(np.count_nonzero(np.unique(found)))
        found_any |= n > 0
        out = out.astype(np.uint16 if out.max() < 2**16 else np.uint32)
        target = args.output / f"{path.stem}.tif" if folder else args.output
        target.parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(target, out, compression="zlib", photometric="minisblack")
        print(f"found {n} objects like the {len(exemplars.areas)} examples in {path.name}: "
              f"{target} ({out.shape}, {out.dtype})")  # fmt: skip
    if not found_any:
        print("no object like the examples was found. Try more or other examples, or set "
              "--contrast", file=sys.stderr)  # fmt: skip
        return NOTHING_FOUND
    return 0
