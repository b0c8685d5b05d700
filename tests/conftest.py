"""Shared fixtures. The reference implementations are made importable here (see oracles/)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_ORACLES = Path(__file__).parent / "oracles"


def _real_torchvision_loads() -> bool:
    if importlib.util.find_spec("torchvision") is None:
        return False
    try:
        import torchvision.ops  # noqa: F401
    except Exception:
        for name in [m for m in sys.modules if m.split(".")[0] == "torchvision"]:
            del sys.modules[name]
        return False
    return True


if not _real_torchvision_loads():
    sys.path.insert(0, str(_ORACLES))
