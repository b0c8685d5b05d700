"""SAM's ViT image encoder (vit_b / vit_l / vit_h): windowed + global attention blocks with
decomposed relative position bias, then a conv neck to 256 channels.

State-dict keys and shapes match the official ``ImageEncoderViT`` exactly.
"""

from __future__ import annotations

import torch
from torch import nn

from napari_sam.jobs import checkpoint

from .config import ViTEncoderConfig
from .layers import (
    DEFAULT_QUERY_CHUNK,
    LayerNorm2d,
    MLPBlock,
    chunked_rel_pos_attention,
    decomposed_rel_pos,
    rel_pos_attention,
    window_partition,
    window_unpartition,
)


class PatchEmbed(nn.Module):
    """(B, 3, S, S) image -> (B, S/p, S/p, C) tokens by a stride-p conv (key ``proj``)."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)  # (B, h, w, C)


class Attention(nn.Module):
    """Multi-head self attention over a (B, H, W, C) grid with decomposed rel-pos bias.

    Under autograd the plain (differentiable) path runs; without it (inference) a chunked
    path with the same result and a fraction of the memory.
    """

    def __init__(
        self, dim: int, num_heads: int, input_size: tuple[int, int], use_rel_pos: bool = True
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))
        self.query_chunk = DEFAULT_QUERY_CHUNK

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C) -> (B, H, W, C)
        b, h, w, _ = x.shape
        nh = self.num_heads
        # (B, T, 3, nh, hs) -> (3, B*nh, T, hs)
        qkv = self.qkv(x).reshape(b, h * w, 3, nh, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, b * nh, h * w, -1).unbind(0)
        rel_h = rel_w = None
        if self.use_rel_pos:
            rel_h, rel_w = decomposed_rel_pos(q, self.rel_pos_h, self.rel_pos_w, (h, w))
        if torch.is_grad_enabled():
            out = rel_pos_attention(q, k, v, rel_h, rel_w, self.scale, (h, w))
        else:
            out = chunked_rel_pos_attention(
                q, k, v, rel_h, rel_w, self.scale, (h, w), chunk=self.query_chunk
            )
        out = out.view(b, nh, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
        return self.proj(out)


class Block(nn.Module):
    """Pre-norm transformer block; ``window_size`` 0 means global attention."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        use_rel_pos: bool,
        window_size: int,
        input_size: tuple[int, int],
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        attn_size = input_size if window_size == 0 else (window_size, window_size)
        self.attn = Attention(dim, num_heads, attn_size, use_rel_pos)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), nn.GELU)
        self.window_size = window_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C) -> (B, H, W, C)
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            h, w = x.shape[1], x.shape[2]
            x, pad_hw = window_partition(x, self.window_size)  # (B*nW, ws, ws, C)
            x = self.attn(x)
            x = window_unpartition(x, self.window_size, pad_hw, (h, w))
        else:
            x = self.attn(x)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class ImageEncoderViT(nn.Module):
    """(B, 3, S, S) normalised image -> (B, out_chans, S/p, S/p) embedding."""

    def __init__(self, config: ViTEncoderConfig, image_size: int, patch_size: int) -> None:
        super().__init__()
        self.img_size = image_size
        grid = image_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, 3, config.embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, config.embed_dim))
        self.blocks = nn.ModuleList(
            Block(
                config.embed_dim,
                config.num_heads,
                config.mlp_ratio,
                config.use_rel_pos,
                0 if i in config.global_attn_indexes else config.window_size,
                (grid, grid),
            )
            for i in range(config.depth)
        )
        out = config.out_chans
        self.neck = nn.Sequential(
            nn.Conv2d(config.embed_dim, out, kernel_size=1, bias=False),
            LayerNorm2d(out),
            nn.Conv2d(out, out, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x) + self.pos_embed  # (B, h, w, C)
        for blk in self.blocks:
            checkpoint()  # a cancelled job stops here, within one block
            x = blk(x)
        return self.neck(x.permute(0, 3, 1, 2))  # (B, out_chans, h, w)
