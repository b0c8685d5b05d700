"""Makes the reference implementations importable from a benchmark script.

Puts tests/oracles (the torchvision / timm stand-ins, see its README) on ``sys.path`` when
the real torchvision does not load beside this torch, and tests/ for the shared test helpers.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_reference_importable() -> None:
    """Idempotent; call before importing ``segment_anything`` or ``mobile_sam``."""
    tests = str(REPO / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    try:
        if importlib.util.find_spec("torchvision") is not None:
            import torchvision.ops  # noqa: F401

            return
    except Exception:
        for name in [m for m in sys.modules if m.split(".")[0] == "torchvision"]:
            del sys.modules[name]
    oracles = str(REPO / "tests" / "oracles")
    if oracles not in sys.path:
        sys.path.insert(0, oracles)
