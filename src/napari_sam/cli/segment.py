"""``napari-sam segment``: prompts from a JSON file -> a label image, no viewer, no Qt.

PROMPTS.json::

    {"objects": [{"id": 1, "slice": [z], "points": [[row, col], ...], "labels": [1, 0, ...],
                  "box": [row0, col0, row1, col1], "propagate": true}]}

``slice`` (leading indices of nD data) is optional for 2D images; ``labels`` default to all
positive; give points, a box, or both. The output has the image's spatial shape and each
object's id. ``"propagate": true`` (or a dict of :class:`~napari_sam.propagation.PropagationConfig`
fields, plus ``"axis"``: the leading axis to follow, default 0) segments the object through
the stack from every entry with its id: entries of negative points only mark slices it does
not reach. Every slice is embedded once (per tile): in process, or read from ``--embeddings
STORE.zarr`` made by ``napari-sam embed`` (a store made for other data, model, contrast or
tiling is refused). Large planes are tiled (``--tile H W --halo H W``, default from the model
input) and an object crossing tile borders is still segmented whole. A small object is decoded
once more on a magnified window around it (``--zoom``, see :mod:`napari_sam.zoom`). The image
is read lazily, a window at a time, and its axes as every command reads them
(:mod:`napari_sam.cli.inputs`: ``--rgb``, ``--channel``); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_sam.cli.inputs import InputImage, Layout, add_image_options, input_of
from napari_sam.cli.progress import Progress, progress_of


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "segment", help="segment objects described in a prompts JSON file into a label image"
    )
    parser.add_argument("image", type=Path, help="TIFF, PNG, JPEG, zarr or npy image")
    parser.add_argument("--prompts", type=Path, required=True, help="PROMPTS.json")
    parser.add_argument("-o", "--output", type=Path, required=True, help="LABELS.tif")
    parser.add_argument("--model", default=None, help="weights name or file (default: bundled)")
    parser.add_argument("--device", default="auto", choices=("auto", "cuda", "mps", "cpu"))
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    add_image_options(parser)
    parser.add_argument(
        "--overwrite", action="store_true", help="later objects overwrite earlier ones"
    )
    parser.add_argument("--embeddings", type=Path, default=None,
                        help="read embeddings from this store (napari-sam embed --out)")  # fmt: skip
    parser.add_argument("--contrast", nargs=2, type=float, metavar=("LOW", "HIGH"),
                        help="with --embeddings: the limits given to napari-sam embed")  # fmt: skip
    parser.add_argument("--tile", nargs=2, type=int, metavar=("H", "W"),
                        help="tile core size (default: from the image and model input size)")  # fmt: skip
    parser.add_argument("--halo", nargs=2, type=int, metavar=("H", "W"),
                        help="halo per tile side (default: 1/8 of the model input when tiled)")  # fmt: skip
    parser.add_argument("--zoom", default="auto", choices=("auto", "on", "off"),
                        help="decode small objects again on a magnified window (auto: on for "
                             "the bundled model, whose encoder is fast)")  # fmt: skip
    parser.add_argument("--multimask", default="auto", choices=("auto", "best", "single", "any"),
                        help="which of SAM's masks an object gets: best (of its three, by "
                             "predicted IoU), single (the single-mask output), any (the best "
                             "of all four) or auto (per kind of prompt, as the model says; "
                             "docs/prompting.md)")  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.set_defaults(func=run)


def read_prompts(path: Path) -> list[dict]:
    """The ``objects`` list of a prompts file, checked for ids."""
    spec = json.loads(Path(path).read_text())
    objects = spec.get("objects") if isinstance(spec, dict) else None
    if not objects:
        raise ValueError(f"{path}: expected {{'objects': [...]}} with at least one object")
    for obj in objects:
        if not isinstance(obj.get("id"), int) or obj["id"] <= 0:
            raise ValueError(f"{path}: every object needs a positive integer 'id', got {obj}")
    return objects


def _prompt(obj: dict):
    from napari_sam.prompts import Prompt

    if "points" not in obj and "box" not in obj:
        raise ValueError(f"object {obj['id']}: give 'points', a 'box', or both")
    points = np.asarray(obj.get("points", []), dtype=np.float64).reshape(-1, 2)
    labels = obj.get("labels", [1] * len(points))
    try:
        return Prompt(points=points, labels=labels, box=obj.get("box"))
    except ValueError as exc:
        raise ValueError(f"object {obj['id']}: {exc}") from None


@dataclass(frozen=True, eq=False)
class _Object:
    """One object of the prompts file: its entries (leading index -> plane prompt, in file
    order), its order of first appearance, and how to propagate it (None: not at all)."""

    id: int
    order: int
    annotations: dict[tuple[int, ...], Any]
    propagate: Any = None
    axis: int = 0


def group_objects(
    objects: list[dict], leading: tuple[int, ...], zoom: str = "auto", multimask: str = "auto",
    channel_hint: bool = False,
) -> list[_Object]:  # fmt: skip
    """Entries grouped by id; an id marked ``propagate`` collects all of its entries (its
    propagation zooms as ``zoom`` and picks masks as ``multimask`` unless its options say
    otherwise). ``channel_hint``: a wrong slice index names ``--channel`` (the leading
    axes may hold channels)."""
    from napari_sam.propagation import PropagationConfig

    grouped: dict[int, _Object] = {}
    for order, obj in enumerate(objects):
        index = tuple(int(i) for i in obj.get("slice", ()))
        if len(index) != len(leading) or not all(0 <= i < n for i, n in zip(index, leading)):
            hint = (" (if the first axis holds channels, choose one with --channel N or "
                    "--channel composite)") if channel_hint and leading else ""  # fmt: skip
            raise ValueError(
                f"object {obj['id']}: the image has leading axes {leading}; give "
                f"{len(leading)} slice indices inside them, not {list(index)}{hint}"
            )
        entry = grouped.setdefault(obj["id"], _Object(obj["id"], order, {}))
        if index in entry.annotations:
            raise ValueError(f"object {obj['id']}: two entries on slice {list(index)}")
        entry.annotations[index] = _prompt(obj)
        spec = obj.get("propagate")
        if spec:
            if not leading:
                raise ValueError(f"object {obj['id']}: propagation needs a stack, not a 2D image")
            options = dict(spec) if isinstance(spec, dict) else {}
            options.setdefault("zoom", zoom)
            options.setdefault("multimask", multimask)
            axis = int(options.pop("axis", 0))
            try:
                config = PropagationConfig(**options)
            except TypeError as exc:
                raise ValueError(f"object {obj['id']}: bad 'propagate' options: {exc}") from None
            grouped[obj["id"]] = _Object(obj["id"], entry.order, entry.annotations, config, axis)
    return list(grouped.values())


def _grid(args: argparse.Namespace, plane: tuple[int, int], image_size: int):
    from napari_sam.tile_grid import TileGrid, default_grid

    if args.tile:
        return TileGrid(plane, tuple(args.tile), tuple(args.halo or (0, 0)))
    grid = default_grid(plane, image_size)
    return TileGrid(plane, grid.tile, tuple(args.halo)) if args.halo and grid.tile else grid


def in_process_embeddings(args: argparse.Namespace, predictor, image: InputImage):
    """Embeddings computed here per (slice, tile), full precision, each window read from the
    file when it is embedded: ``(embeddings, leading shape)``. The contrast is the one every
    command gives an image (``--contrast``, else one pair sampled over the whole stack, as
    ``embed``, ``auto`` and a store have it), so a slice segments the same with or without a
    store."""
    from napari_sam.plane_segmentation import WindowEmbeddings
    from napari_sam.slice_source import sample_limits
    from napari_sam.stack_embeddings import PredictorEmbedder

    source, limits = image.slice_source(0, tuple(args.contrast) if args.contrast else None)
    embedder = PredictorEmbedder(predictor, limits or sample_limits(source), source.rgb or None)
    grid = _grid(args, source.plane_shape, predictor.config.image_size)

    def embed(flat: int, window: tuple[int, int, int, int]):
        return embedder.embed(source.read(flat, window))

    return WindowEmbeddings(grid, embed, cache_size=max(8, 4 * grid.n_tiles)), source.leading_shape


def _stored(args: argparse.Namespace, predictor, image: InputImage):
    """Embeddings read from (and, where missing, added to) ``args.embeddings``."""
    from napari_sam.embeddings import EmbeddingStore
    from napari_sam.slice_source import sample_limits
    from napari_sam.stack_embeddings import PredictorEmbedder, StackEmbeddings

    stored = EmbeddingStore.open(args.embeddings).signature  # FileNotFoundError if absent
    source, limits = image.slice_source(stored.level,
                                        tuple(args.contrast) if args.contrast else None)  # fmt: skip
    limits = limits or sample_limits(source)
    tile = tuple(args.tile) if args.tile else stored.tile
    halo = tuple(args.halo) if args.halo else stored.halo
    stack = StackEmbeddings.open(source, PredictorEmbedder(predictor, limits, source.rgb or None),
                                 args.embeddings, tile=tile, halo=halo)  # fmt: skip
    return stack, source.leading_shape


def _masks(
    obj: _Object, embeddings, predictor, leading: tuple[int, ...], zoom: str = "auto",
    multimask: str = "auto", progress: Progress | None = None,
):  # fmt: skip
    """(leading index, plane ObjectMask) of every slice ``obj`` is segmented on; ``zoom``
    and ``multimask`` as ``--zoom`` and ``--multimask`` (a propagated object's own options
    win). ``progress(done, total)`` sees each propagated slice."""
    from napari_sam.jobs import drain
    from napari_sam.plane_segmentation import segment_plane
    from napari_sam.propagation import axis_slices, propagate

    if obj.propagate is None:
        for index, prompt in obj.annotations.items():
            flat = int(np.ravel_multi_index(index, leading)) if leading else 0
            yield index, segment_plane(embeddings, predictor, flat, prompt, zoom=zoom,
                                       multimask=multimask).mask  # fmt: skip
        return
    if not 0 <= obj.axis < len(leading):
        raise ValueError(f"object {obj.id}: no leading axis {obj.axis} in {leading}")
    first = next(iter(obj.annotations))
    if any(i[: obj.axis] + i[obj.axis + 1 :] != first[: obj.axis] + first[obj.axis + 1 :]
           for i in obj.annotations):  # fmt: skip
        raise ValueError(f"object {obj.id}: its entries must differ only along axis {obj.axis}")
    slices = axis_slices(leading, obj.axis, first)
    annotations = {index[obj.axis]: prompt for index, prompt in obj.annotations.items()}
    try:
        result = drain(propagate(embeddings, predictor, annotations, slices=slices,
                                 config=obj.propagate), progress)  # fmt: skip
    except ValueError as exc:
        raise ValueError(f"object {obj.id}: {exc}") from None
    for position, mask in zip(result.positions, result.masks):
        yield tuple(int(i) for i in np.unravel_index(slices[position], leading)), mask


def run(args: argparse.Namespace) -> int:
    import tifffile

    from napari_sam.embeddings import SignatureMismatchError
    from napari_sam.labels import write_mask
    from napari_sam.predictor import Predictor

    progress = progress_of(args)
    objects = read_prompts(args.prompts)
    image = input_of(args)
    predictor = Predictor.load(args.model, device=args.device, precision=args.precision)
    embeddings_of = _stored if args.embeddings else in_process_embeddings
    try:
        embeddings, leading = embeddings_of(args, predictor, image)
    except SignatureMismatchError as exc:
        print(f"napari-sam segment: error: {exc}. Segment with the --model, --channel, "
              "--contrast, --tile and --halo the store was made with.", file=sys.stderr)  # fmt: skip
        return 2
    work = group_objects(objects, leading, args.zoom, args.multimask,
                         channel_hint=image.layout == Layout())  # fmt: skip
    if args.embeddings:
        progress.resume = (f"nothing was written; the embeddings computed so far are in "
                           f"{args.embeddings}: run the same command again to resume")  # fmt: skip
    else:
        progress.resume = ("nothing was written: run the same command again to start over "
                           "(napari-sam embed IMAGE --out STORE, then --embeddings STORE here, "
                           "keeps the embeddings across runs)")  # fmt: skip
    plain = [o for o in work if o.propagate is None]
    found = []  # computed slice by slice (embedding reuse), written in file order
    entries = sum(len(o.annotations) for o in plain)
    progress.start("segmenting prompts", "prompts")
    for obj in sorted(plain, key=lambda o: min(o.annotations)):
        for index, mask in _masks(obj, embeddings, predictor, leading, args.zoom,
                                  args.multimask):  # fmt: skip
            found.append((obj.order, index, obj.id, mask))
            progress(len(found), entries)
    for obj in sorted((o for o in work if o.propagate is not None),
                      key=lambda o: min(o.annotations)):  # fmt: skip
        progress.start(f"propagating object {obj.id}", "slices")
        found += [(obj.order, index, obj.id, m)
                  for index, m in _masks(obj, embeddings, predictor, leading, args.zoom,
                                         args.multimask, progress)]  # fmt: skip
    progress.close()
    dtype = np.uint16 if max(o["id"] for o in objects) < 2**16 else np.uint32
    labels = np.zeros((*leading, *embeddings.grid.shape), dtype=dtype)
    for _, index, obj_id, mask in sorted(found, key=lambda item: item[0]):
        write_mask(labels, mask, obj_id, index=index, overwrite=args.overwrite, replace=False)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(args.output, labels, compression="zlib", photometric="minisblack")
    print(f"wrote {len(work)} objects to {args.output} ({labels.shape}, {labels.dtype})")
    return 0
