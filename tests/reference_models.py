"""The official ``segment_anything`` model built with one of our ViT configurations.

For reference checks (predictor, automatic generator, trained weights): the same numbers as
``config`` in the official classes, loaded strictly with ``state_dict`` when one is given.
"""

from __future__ import annotations

from functools import partial

import torch
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)

from napari_sam.model.config import SamConfig


def official_sam(config: SamConfig, state_dict: dict | None = None) -> Sam:
    """The official Sam of ``config``'s architecture (a ViT encoder), in eval mode."""
    enc = config.encoder
    grid = config.embedding_size
    official = Sam(
        image_encoder=ImageEncoderViT(
            img_size=config.image_size, patch_size=config.patch_size, embed_dim=enc.embed_dim,
            depth=enc.depth, num_heads=enc.num_heads, mlp_ratio=enc.mlp_ratio,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), qkv_bias=True,
            use_rel_pos=enc.use_rel_pos, global_attn_indexes=enc.global_attn_indexes,
            window_size=enc.window_size, out_chans=enc.out_chans,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=config.prompt_embed_dim, image_embedding_size=(grid, grid),
            input_image_size=(config.image_size, config.image_size), mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
            transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256,
        ),
        pixel_mean=list(config.pixel_mean), pixel_std=list(config.pixel_std),
    )  # fmt: skip
    if state_dict is not None:
        official.load_state_dict(state_dict, strict=True)
    return official.eval()
