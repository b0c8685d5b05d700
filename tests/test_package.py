"""The package as pip installs it: manifest, entry points, import hygiene, wheel contents."""

from __future__ import annotations

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


def test_cli_info_reports_versions_and_device():
    result = subprocess.run(
        [sys.executable, "-m", "napari_sam.cli", "info"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    for word in ("napari_sam", "napari", "torch", "device", "vit_b", "vit_t"):
        assert word in result.stdout
    assert "cpu" in result.stdout  # no GPU on CI machines


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
