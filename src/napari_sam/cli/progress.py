"""Progress of a command on stderr, and where it stopped when it was interrupted.

:func:`napari_sam.cli.main` gives every command one :class:`Progress` (``args.progress``;
:func:`progress_of` reads it). A command names each stage of its work (:meth:`Progress.start`)
and says how to carry on after an interruption (``resume``); on Ctrl-C ``main`` prints
:meth:`Progress.stopped` and exits 130, so the message is written once for every command.
"""

from __future__ import annotations

import argparse
import sys


class Progress:
    """``label: done/total unit`` on stderr: one line rewritten in place on a terminal;
    elsewhere (a log file, a pipe) a new line at each tenth of a stage, so the log stays
    readable. ``quiet``: print nothing (:meth:`stopped` still knows where the work was)."""

    def __init__(self, quiet: bool = False, label: str = "segmenting", unit: str = "steps"):
        self.quiet, self.label, self.unit = quiet, label, unit
        self.resume = ""  # how to carry on after a stop, e.g. "run the same command again"
        self.done: int | None = None
        self.total: int | None = None
        self.shown, self._line_open = -1, False

    def start(self, label: str, unit: str = "steps", resume: str | None = None) -> None:
        """Begin a stage named ``label`` counted in ``unit``; ``resume`` (when given)
        replaces the advice :meth:`stopped` gives."""
        self.close()
        self.label, self.unit, self.done, self.total, self.shown = label, unit, None, None, -1
        if resume is not None:
            self.resume = resume

    def __call__(self, done: int, total: int) -> None:
        self.done, self.total = int(done), int(total)
        if self.quiet:
            return
        text = f"{self.label}: {done}/{total} {self.unit}"
        if sys.stderr.isatty():
            print(f"\r{text}", end="", file=sys.stderr, flush=True)
            self._line_open = True
            return
        tenth = 10 * done // max(total, 1)
        if tenth > self.shown:
            self.shown = tenth
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        """End the line rewritten in place, if one is open."""
        if self._line_open:
            print(file=sys.stderr, flush=True)
            self._line_open = False

    def stopped(self) -> str:
        """Where the work stopped and how to carry on, e.g. ``"stopped by Ctrl-C after 12 of
        40 embeddings (embedding); the embeddings computed so far are in s.zarr: run the
        same command again to resume"``."""
        text = "stopped by Ctrl-C"
        if self.total is not None:
            text += f" after {self.done} of {self.total} {self.unit} ({self.label})"
        return f"{text}; {self.resume}" if self.resume else text


def progress_of(args: argparse.Namespace) -> Progress:
    """The :class:`Progress` ``main`` gave the command (a fresh one when ``run`` is called
    directly with a namespace of its own)."""
    progress = getattr(args, "progress", None)
    return progress if progress is not None else Progress(getattr(args, "quiet", False))
