"""The ``napari-sam`` command line: one module per subcommand, no Qt loaded.

Each module named in ``SUBCOMMANDS`` defines ``register(subparsers)``, which adds its parser
and sets ``func`` to a callable ``(argparse.Namespace) -> int``. :func:`main` gives it
``args.progress`` (:class:`~napari_sam.cli.progress.Progress`), where the command reports its
stages and how to resume; Ctrl-C then prints where the work stopped and exits 130. The shared
parts: :mod:`~napari_sam.cli.inputs` (how an image is read), :mod:`~napari_sam.cli.progress`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = ("info", "embed", "train", "calibrate", "segment", "auto", "refine", "similar")

#: exit status after Ctrl-C (128 + SIGINT, as shells report it)
INTERRUPTED = 130


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
    from napari_sam.cli.progress import Progress
    from napari_sam.model.download import WeightsError

    args = build_parser().parse_args(argv)
    args.progress = Progress(quiet=getattr(args, "quiet", False))
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:  # Ctrl-C: where the work stopped and how to go on
        message, status = args.progress.stopped(), INTERRUPTED
    except (ValueError, FileNotFoundError, KeyError, WeightsError) as exc:
        # Bad input is the user's to fix: one clear line, no traceback.
        message, status = f"error: {exc}", 2
    finally:
        args.progress.close()  # end a progress line rewritten in place
    print(f"napari-sam {args.command}: {message}", file=sys.stderr)
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
