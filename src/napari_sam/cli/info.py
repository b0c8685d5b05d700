"""``napari-sam info``: versions, the device that would be used, the models and weights known."""

from __future__ import annotations

import argparse
import importlib.metadata as metadata


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("info", help="print versions, device and known models")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from napari_sam import __version__
    from napari_sam.device import cpu_has_fast_bf16, resolve_device, resolve_precision
    from napari_sam.model.config import REGISTRY
    from napari_sam.model.download import WEIGHTS, availability, cache_dir, default_weights

    device = resolve_device("auto")
    print(f"napari_sam  {__version__}")
    print(f"napari      {_version('napari')}")
    print(f"torch       {torch.__version__}")
    print(f"device      {device.type} (auto: cuda, then mps, else cpu)")
    print(f"precision   {str(resolve_precision('auto', device)).removeprefix('torch.')}"
          f" (cpu bf16 units: {'yes' if cpu_has_fast_bf16() else 'no'})")
    print("architectures:")
    for name, config in REGISTRY.items():
        print(f"  {name:<10} {config.description}")
    print(f"weights (cache: {cache_dir() / 'weights'}; default: {default_weights()}):")
    for name, info in WEIGHTS.items():
        print(f"  {name:<20} {info.architecture:<9} {availability(info):<16} {info.description}")
    return 0
