"""The package as pip installs it: manifest, entry points, import hygiene, wheel contents."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from npe2 import PluginManifest

REPO = Path(__file__).resolve().parents[1]


def test_manifest_validates_and_every_python_name_imports():
    manifest = PluginManifest.from_distribution("napari-sam")
    assert manifest.name == "napari-sam"
    manifest.validate_imports()  # raises if any python_name does not import
    assert {w.display_name for w in manifest.contributions.widgets} == {"Segment Anything"}
    assert {s.key for s in manifest.contributions.sample_data} >= {"nuclei_2d", "nuclei_3d"}


def test_import_loads_neither_qt_nor_napari():
    code = (
        "import sys, napari_sam, napari_sam.cli;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('qtpy', 'PyQt6', 'PyQt5',"
        " 'PySide6', 'napari', 'magicgui', 'vispy')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_cli_info_reports_versions_and_device(tmp_path):
    import torch

    from napari_sam import __version__
    from napari_sam.device import resolve_device
    from napari_sam.model.config import REGISTRY
    from napari_sam.model.download import WEIGHTS, default_weights

    env = {**os.environ, "NAPARI_SAM_CACHE": str(tmp_path / "cache")}
    result = subprocess.run(
        [sys.executable, "-m", "napari_sam.cli", "info"], capture_output=True, text=True,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    fields = {line.split()[0]: line.split()[1] for line in lines
              if not line.startswith(" ") and len(line.split()) > 1}
    assert fields["napari_sam"] == __version__ and fields["torch"] == torch.__version__
    # the device this machine would run on (cuda where there is a GPU), not a fixed word
    assert fields["device"] == resolve_device("auto").type
    assert f"cache: {tmp_path / 'cache' / 'weights'}; default: {default_weights()}" in (
        result.stdout)
    listed = {line.split()[0] for line in lines if line.startswith("  ")}
    assert set(REGISTRY) | set(WEIGHTS) <= listed


@pytest.mark.slow
def test_wheel_contains_manifest_and_package_data(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path)],
        cwd=REPO, check=True, capture_output=True,
    )
    (wheel,) = tmp_path.glob("napari_sam-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "napari_sam/napari.yaml" in names
    assert "napari_sam/sample_data.py" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "napari.manifest" in text and "napari_sam:napari.yaml" in text
    assert "napari-sam = napari_sam.cli:main" in text
    weights = [n for n in names if n.startswith("napari_sam/weights/") and n.endswith(".pt")]
    bundled = list((REPO / "src/napari_sam/weights").glob("*.pt"))
    assert len(weights) == len(bundled)
    # the bundled model and its instance decoder (automatic mode's default, APG)
    assert {"napari_sam/weights/vit_nano.pt", "napari_sam/weights/vit_nano_decoder.pt"} <= names
