"""SAM's mask decoder: output tokens + prompt tokens through the two-way transformer, then
hypernetwork MLPs against the 4x upscaled image features (keys match ``MaskDecoder``).

Works for any image-embedding grid (h, w); masks come out at (4h, 4w).
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import MLP, LayerNorm2d
from .transformer import TwoWayTransformer


class MaskDecoder(nn.Module):
    """Predicts mask logits and their IoU scores from image and prompt embeddings."""

    def __init__(
        self,
        *,
        transformer_dim: int,
        transformer: TwoWayTransformer,
        num_multimask_outputs: int = 3,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
    ) -> None:
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.num_mask_tokens = num_multimask_outputs + 1
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3)
            for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(
            transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth
        )

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks for a batch of prompts.

        image_embeddings (Bi, C, h, w) with Bi 1 (shared by all prompts) or B; image_pe
        (1, C, h, w); sparse (B, N, C); dense (B, C, h, w). Returns mask logits
        (B, 3 | 1, 4h, 4w) and IoU predictions (B, 3 | 1): the 3 multimask outputs, or the
        single-mask output.
        """
        masks, iou_pred = self.predict_masks(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings
        )
        sel = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, sel], iou_pred[:, sel]

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All 4 mask outputs: logits (B, 4, 4h, 4w) and IoU predictions (B, 4)."""
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        b = sparse_prompt_embeddings.shape[0]
        tokens = torch.cat(
            (output_tokens.unsqueeze(0).expand(b, -1, -1), sparse_prompt_embeddings), dim=1
        )  # (B, 1 + 4 + N, C)
        # one copy of the image features per prompt (as the official code does)
        src = torch.repeat_interleave(image_embeddings, b // image_embeddings.shape[0], dim=0)
        src = src + dense_prompt_embeddings  # (B, C, h, w)
        pos_src = image_pe.expand(b, -1, -1, -1)
        _, c, h, w = src.shape

        hs, src = self.transformer(src, pos_src, tokens)
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens, :]  # (B, 4, C)

        src = src.transpose(1, 2).reshape(b, c, h, w)
        upscaled = self.output_upscaling(src)  # (B, C/8, 4h, 4w)
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)],
            dim=1,
        )  # (B, 4, C/8)
        _, c8, uh, uw = upscaled.shape
        masks = (hyper_in @ upscaled.view(b, c8, uh * uw)).view(b, -1, uh, uw)
        return masks, self.iou_prediction_head(iou_token_out)
