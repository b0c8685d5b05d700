"""The SAM model family in torch (no napari, no Qt)."""

from .config import REGISTRY, SamConfig, TinyViTEncoderConfig, ViTEncoderConfig, get_config
from .sam import Sam, build_sam

__all__ = [
    "REGISTRY",
    "Sam",
    "SamConfig",
    "TinyViTEncoderConfig",
    "ViTEncoderConfig",
    "build_sam",
    "get_config",
]
