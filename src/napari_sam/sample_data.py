"""Sample data for File > Open Sample: synthetic fluorescence nuclei, made offline.

Each function returns napari ``LayerData`` tuples; nothing is downloaded.
"""

from __future__ import annotations

from typing import Any

from napari_sam.training.synthetic import NucleiStyle, SyntheticImage, synthetic_nuclei

LayerData = tuple[Any, dict[str, Any], str]

# A style that looks like a typical widefield nuclear stain: moderate density, some clusters.
_SAMPLE_STYLE = NucleiStyle(
    radius=(10.0, 18.0), coverage=(0.25, 0.3), cluster_fraction=(0.3, 0.3), blur=(1.0, 1.0),
    photons=(400.0, 400.0), gamma=(1.0, 1.0),
)


def synthetic_2d() -> SyntheticImage:
    """The 2D sample with its true labels: 512 x 512 uint16 nuclei (fixed seed)."""
    return synthetic_nuclei((512, 512), seed=2024, style=_SAMPLE_STYLE)


def synthetic_3d() -> SyntheticImage:
    """The 3D sample with its true labels: 32 x 256 x 256 uint16 nuclei, z voxels 2x the xy
    size (fixed seed)."""
    return synthetic_nuclei((32, 256, 256), seed=2025, style=_SAMPLE_STYLE, anisotropy=2.0)


def nuclei_2d() -> list[LayerData]:
    """A 512 x 512 uint16 image of nuclei (:func:`synthetic_2d`)."""
    return [(synthetic_2d().image, {"name": "nuclei", "colormap": "gray"}, "image")]


def nuclei_3d() -> list[LayerData]:
    """A 32 x 256 x 256 uint16 stack of nuclei (:func:`synthetic_3d`)."""
    meta = {"name": "nuclei 3D", "colormap": "gray", "scale": (2.0, 1.0, 1.0)}
    return [(synthetic_3d().image, meta, "image")]
