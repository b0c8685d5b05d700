"""The small random-weight SAM configuration of the tests (see the ``tiny_sam`` fixture)."""

from __future__ import annotations


def tiny_sam_config(image_size: int = 256):
    """A small random-weight ViT SAM: embed 32, depth 2, 256 input (16 x 16 embedding grid,
    64 x 64 low-res masks). Standard prompt encoder and mask decoder."""
    from napari_sam.model.config import SamConfig, ViTEncoderConfig

    return SamConfig(
        "tiny_test",
        ViTEncoderConfig(embed_dim=32, depth=2, num_heads=2, global_attn_indexes=(1,),
                         window_size=4),
        image_size=image_size,
    )
