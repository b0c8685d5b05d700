"""Sample data for File > Open Sample: synthetic fluorescence nuclei, made offline.

Each function returns napari ``LayerData`` tuples; nothing is downloaded.
"""

from __future__ import annotations

from typing import Any

from napari_sam.training.synthetic import NucleiStyle, synthetic_nuclei

LayerData = tuple[Any, dict[str, Any], str]

# A style that looks like a typical widefield nuclear stain: moderate density, some clusters.
_SAMPLE_STYLE = NucleiStyle(
    radius=(10.0, 18.0), coverage=(0.25, 0.3), cluster_fraction=(0.3, 0.3), blur=(1.0, 1.0),
    photons=(400.0, 400.0), gamma=(1.0, 1.0),
)


def nuclei_2d() -> list[LayerData]:
    """A 512 x 512 uint16 image of nuclei (fixed seed)."""
    sample = synthetic_nuclei((512, 512), seed=2024, style=_SAMPLE_STYLE)
    return [(sample.image, {"name": "nuclei", "colormap": "gray"}, "image")]


def nuclei_3d() -> list[LayerData]:
    """A 32 x 256 x 256 uint16 stack of nuclei (z voxels 2x the xy size, fixed seed)."""
    sample = synthetic_nuclei((32, 256, 256), seed=2025, style=_SAMPLE_STYLE, anisotropy=2.0)
    meta = {"name": "nuclei 3D", "colormap": "gray", "scale": (2.0, 1.0, 1.0)}
    return [(sample.image, meta, "image")]
