"""``napari-sam segment``: prompts from a JSON file -> a label image, no viewer, no Qt.

PROMPTS.json::

    {"objects": [{"id": 1, "slice": [z], "points": [[row, col], ...], "labels": [1, 0, ...],
                  "box": [row0, col0, row1, col1]}]}

``slice`` (leading indices of nD data) is optional for 2D images; ``labels`` default to all
positive; give points, a box, or both. The output has the image's spatial shape and each
object's id. Objects on one slice are decoded together after a single embedding.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "segment", help="segment objects described in a prompts JSON file into a label image"
    )
    parser.add_argument("image", type=Path, help="TIFF, PNG or zarr image")
    parser.add_argument("--prompts", type=Path, required=True, help="PROMPTS.json")
    parser.add_argument("-o", "--output", type=Path, required=True, help="LABELS.tif")
    parser.add_argument("--model", default=None, help="weights name or file (default: bundled)")
    parser.add_argument("--device", default="auto", choices=("auto", "cuda", "mps", "cpu"))
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    parser.add_argument(
        "--channel", default=None,
        help="for multichannel (C, ..., H, W) data: a channel index, or 'composite'",
    )  # fmt: skip
    parser.add_argument(
        "--overwrite", action="store_true", help="later objects overwrite earlier ones"
    )
    parser.set_defaults(func=run)


def read_image(path: Path) -> np.ndarray:
    """A TIFF, PNG or zarr array (a zarr group: its array "0", as in OME-Zarr)."""
    if not path.exists():
        raise FileNotFoundError(f"no such image: {path}")
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        import tifffile

        return tifffile.imread(path)
    if suffix == ".png":
        from PIL import Image

        return np.asarray(Image.open(path))
    if suffix == ".zarr" or path.is_dir():
        import zarr

        node = zarr.open(str(path), mode="r")
        return np.asarray(node["0"] if isinstance(node, zarr.Group) else node)
    raise ValueError(f"cannot read {path.name}: use TIFF, PNG or zarr")


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


def run(args: argparse.Namespace) -> int:
    import tifffile

    from napari_sam.labels import write_mask
    from napari_sam.predictor import Predictor

    image = read_image(args.image)
    objects = read_prompts(args.prompts)
    channel = None
    if args.channel is not None:
        channel = args.channel if args.channel == "composite" else int(args.channel)
    rgb = image.ndim >= 3 and image.shape[-1] in (3, 4)
    if channel is not None:  # channel-first (C, ..., H, W): the channel axis is kept per slice
        spatial = image.shape[1:]
    else:
        spatial = image.shape[:-1] if rgb else image.shape
    prompts = {}
    for obj in objects:
        index = tuple(int(i) for i in obj.get("slice", ()))
        if len(index) != len(spatial) - 2:
            raise ValueError(
                f"object {obj['id']}: the image's spatial shape is {spatial}; give "
                f"{len(spatial) - 2} slice indices, not {list(index)}"
            )
        prompts.setdefault(index, []).append((obj["id"], _prompt(obj)))
    dtype = np.uint16 if max(o["id"] for o in objects) < 2**16 else np.uint32
    labels = np.zeros(spatial, dtype=dtype)
    predictor = Predictor.load(args.model, device=args.device, precision=args.precision)
    for index, items in prompts.items():
        plane = image[(slice(None), *index)] if channel is not None else image[index]
        embedding = predictor.embed(plane, rgb=rgb and channel is None, channel=channel)
        result = predictor.predict(embedding, [p for _, p in items])
        for (obj_id, _), mask in zip(items, result.masks):
            write_mask(labels, mask, obj_id, index=index, overwrite=args.overwrite,
                       replace=False)  # fmt: skip
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(args.output, labels, compression="zlib", photometric="minisblack")
    print(f"wrote {len(objects)} objects to {args.output} ({labels.shape}, {labels.dtype})")
    return 0
