"""The ``napari-sam`` command line: one module per subcommand, no Qt loaded.

Each module named in ``SUBCOMMANDS`` defines ``register(subparsers)``, which adds its parser
and sets ``func`` to a callable ``(argparse.Namespace) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = ("info", "embed", "train", "calibrate", "segment", "auto")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand registered."""
    from napari_sam import __version__

    parser = argparse.ArgumentParser(
        prog="napari-sam", description="Segment Anything for microscopy: batch tools."
    )
    parser.add_argument("--version", action="version", version=f"napari-sam {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f"napari_sam.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``napari-sam`` console script; returns the exit status."""
    from napari_sam.model.download import WeightsError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, KeyError, WeightsError) as exc:
        # Bad input is the user's to fix: one clear line, no traceback.
        print(f"napari-sam {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
