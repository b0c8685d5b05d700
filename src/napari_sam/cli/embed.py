"""``napari-sam embed``: compute a stack's embeddings into a store that napari opens later.

    napari-sam embed IMAGE --out STORE.zarr [--model NAME|PATH] [--tile H W --halo H W]
                     [--level N] [--contrast LOW HIGH] [--rgb | --channel N|composite]
                     [--scheduler ADDRESS] [--workers N] [--quiet]

Resumes an interrupted run (finished slices are kept); refuses a store made for other data,
model or tiling unless ``--overwrite``. The image's axes are read as every command reads them
(:mod:`napari_sam.cli.inputs`).
"""

from __future__ import annotations

import argparse
import sys

from napari_sam.cli.inputs import add_image_options, input_of
from napari_sam.cli.progress import progress_of


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "embed", help="compute image embeddings (per slice / tile) into a zarr store",
        description=__doc__.split("\n\n")[0],
    )  # fmt: skip
    parser.add_argument("image", help=".tif/.tiff, .zarr (OME-Zarr multiscale too) or .npy")
    parser.add_argument("--out", required=True, help="the embedding store (a .zarr folder)")
    parser.add_argument("--model", default=None,
                        help="weights name or file (default: the bundled model, as every "
                             "command and the widget)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, mps or auto")
    parser.add_argument("--tile", nargs=2, type=int, metavar=("H", "W"),
                        help="tile core size (default: from the image size)")  # fmt: skip
    parser.add_argument("--halo", nargs=2, type=int, metavar=("H", "W"),
                        help="halo per side (default: 1/8 of the model input when tiled)")  # fmt: skip
    parser.add_argument("--level", type=int, default=0, help="multiscale level (0 = full)")
    parser.add_argument("--contrast", nargs=2, type=float, metavar=("LOW", "HIGH"),
                        help="contrast limits (default: percentiles of a sample)")  # fmt: skip
    parser.add_argument("--scheduler", help="dask.distributed scheduler address "
                        "(default: local threads)")  # fmt: skip
    parser.add_argument("--workers", type=int, default=1, help="local threads (default 1)")
    parser.add_argument("--overwrite", action="store_true",
                        help="recompute a store made for something else")  # fmt: skip
    add_image_options(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.set_defaults(func=run)


def make_embedder(args: argparse.Namespace, source, limits: tuple[float, float] | None):
    """The model behind the store: weights ``args.model`` on ``args.device``, embedding
    ``source`` with contrast ``limits`` (None: sampled from the stack)."""
    from napari_sam.device import resolve_device
    from napari_sam.model.checkpoints import load_model
    from napari_sam.model.download import default_weights
    from napari_sam.predictor import Predictor
    from napari_sam.slice_source import sample_limits
    from napari_sam.stack_embeddings import PredictorEmbedder

    loaded = load_model(args.model or default_weights(), resolve_device(args.device))
    predictor = Predictor(loaded.model, weights_id=loaded.weights_hash)
    return PredictorEmbedder(predictor, limits or sample_limits(source), source.rgb or None)


def run(args: argparse.Namespace) -> int:
    from napari_sam.embeddings import SignatureMismatchError
    from napari_sam.scaleout import embed_all
    from napari_sam.stack_embeddings import StackEmbeddings

    progress = progress_of(args)
    contrast = tuple(args.contrast) if args.contrast else None
    source, limits = input_of(args).slice_source(args.level, contrast)
    embedder = make_embedder(args, source, limits)
    try:
        stack = StackEmbeddings.open(
            source, embedder, args.out, tile=tuple(args.tile) if args.tile else None,
            halo=tuple(args.halo) if args.halo else None,
            on_mismatch="recompute" if args.overwrite else "error",
        )  # fmt: skip
    except SignatureMismatchError as exc:
        print(f"napari-sam embed: error: {exc} (or pass --overwrite)", file=sys.stderr)
        return 2
    grid = stack.grid
    print(f"{source.n_slices} slice(s) of {source.plane_shape}, {grid.n_tiles} tile(s) "
          f"(tile {grid.tile}, halo {grid.halo}) -> {args.out}", file=sys.stderr)  # fmt: skip
    progress.start("embedding", "embeddings", resume=f"the embeddings computed so far are in "
                   f"{args.out}: run the same command again to resume")  # fmt: skip
    for done, total in embed_all(stack, scheduler=args.scheduler, num_workers=args.workers):
        progress(done, total)
    progress.close()
    return 0
