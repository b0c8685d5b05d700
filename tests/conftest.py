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


# ---------------------------------------------------------------- tiny models (predictor)

import pytest  # noqa: E402

from tiny_models import tiny_sam_config  # noqa: E402


@pytest.fixture(scope="session")
def tiny_sam():
    """Our ``Sam`` with random weights (seed 0) for :func:`tiny_sam_config`. Shared: do not
    modify it."""
    import torch

    from napari_sam.model.sam import build_sam

    torch.manual_seed(0)
    return build_sam(tiny_sam_config()).eval()


@pytest.fixture(scope="session")
def official_tiny_sam(tiny_sam):
    """The official ``segment_anything.modeling.Sam`` with the same architecture and weights
    as ``tiny_sam`` (for reference checks with ``segment_anything.SamPredictor``)."""
    from reference_models import official_sam

    return official_sam(tiny_sam.config, tiny_sam.state_dict())


# ---------------------------------------------------------------- reliability report

_REPORT: list[str] = []


@pytest.fixture
def report_line(request):
    """``report_line(text)`` records a line printed at the end of the run, after the test
    results, whatever ``-s`` says (fuzz example counts, soak memory figures)."""

    def add(text: str) -> None:
        _REPORT.append(f"{request.node.nodeid}: {text}")

    return add


def pytest_terminal_summary(terminalreporter):
    if _REPORT:
        terminalreporter.section("napari-sam reliability figures")
        for line in _REPORT:
            terminalreporter.write_line(line)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A random-weight vit_nano checkpoint file (the bundled architecture, 512 input), for
    the command-line tests."""
    import torch

    from napari_sam.model.sam import build_sam

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "nano.pt"
    torch.save(build_sam("vit_nano").state_dict(), path)
    return path
