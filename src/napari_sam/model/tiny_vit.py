"""The TinyViT image encoder of MobileSAM (vit_t): a conv stem, an MBConv stage, then three
windowed-attention stages (attention bias per head and |dy|, |dx| offset), and SAM's neck.

State-dict keys and shapes match MobileSAM's ``TinyViT`` minus its unused classifier head
(``norm_head``, ``head``). Total stride 16: stem 4, then 2, 2, and 1 into the last stage.
"""

from __future__ import annotations

import torch
from torch import nn

from napari_sam.jobs import checkpoint

from .config import TinyViTEncoderConfig
from .layers import LayerNorm2d, window_partition, window_unpartition


class Conv2dBN(nn.Sequential):
    """Conv without bias then BatchNorm (keys ``c``, ``bn``)."""

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        bn_weight_init: float = 1.0,
    ) -> None:
        super().__init__()
        self.add_module(
            "c",
            nn.Conv2d(in_chans, out_chans, kernel_size, stride, padding, groups=groups, bias=False),
        )
        bn = nn.BatchNorm2d(out_chans)
        nn.init.constant_(bn.weight, bn_weight_init)
        nn.init.constant_(bn.bias, 0.0)
        self.add_module("bn", bn)


class PatchEmbed(nn.Module):
    """(B, 3, S, S) -> (B, C, S/4, S/4): two stride-2 3x3 conv-BN with GELU between."""

    def __init__(self, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(
            Conv2dBN(in_chans, embed_dim // 2, 3, 2, 1),
            nn.GELU(),
            Conv2dBN(embed_dim // 2, embed_dim, 3, 2, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, 3x3 depthwise, 1x1 project, residual, GELU."""

    def __init__(self, chans: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(chans * expand_ratio)
        self.conv1 = Conv2dBN(chans, hidden)
        self.act1 = nn.GELU()
        self.conv2 = Conv2dBN(hidden, hidden, 3, 1, 1, groups=hidden)
        self.act2 = nn.GELU()
        self.conv3 = Conv2dBN(hidden, chans, bn_weight_init=0.0)
        self.act3 = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C, H, W)
        y = self.act2(self.conv2(self.act1(self.conv1(x))))
        return self.act3(self.conv3(y) + x)


class PatchMerging(nn.Module):
    """(B, C, H, W) or (B, H*W, C) -> (B, H'*W', C_out) tokens; stride 2 or 1."""

    def __init__(self, input_resolution: tuple[int, int], dim: int, out_dim: int, stride: int):
        super().__init__()
        self.input_resolution = input_resolution
        self.act = nn.GELU()
        self.conv1 = Conv2dBN(dim, out_dim)
        self.conv2 = Conv2dBN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = Conv2dBN(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            h, w = self.input_resolution
            x = x.view(x.shape[0], h, w, -1).permute(0, 3, 1, 2)  # (B, C, H, W)
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        x = self.conv3(x)
        return x.flatten(2).transpose(1, 2)  # (B, H'*W', C_out)


class ConvLayer(nn.Module):
    """Stage 0: MBConv blocks on (B, C, H, W), then patch merging to tokens."""

    def __init__(
        self, dim: int, depth: int, expand_ratio: float, downsample: PatchMerging | None
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand_ratio) for _ in range(depth))
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            checkpoint()  # a cancelled job stops here, within one block
            x = blk(x)
        return x if self.downsample is None else self.downsample(x)


class Mlp(nn.Module):
    """LayerNorm then fc1 -> GELU -> fc2 (keys ``norm``, ``fc1``, ``fc2``)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


def _offset_index(window_size: int) -> torch.Tensor:
    """(N, N) index, N = ws^2: token pair -> bias column ``|dy| * ws + |dx|``.

    This is the order in which MobileSAM enumerates offsets (first appearance).
    """
    r = torch.arange(window_size)
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    yy, xx = yy.flatten(), xx.flatten()
    dy = (yy[:, None] - yy[None, :]).abs()
    dx = (xx[:, None] - xx[None, :]).abs()
    return dy * window_size + dx


class TinyAttention(nn.Module):
    """Window attention with a learned bias per head and offset; LayerNorm inside.

    The qkv projection is laid out per head as [q (hs), k (hs), v (hs)].
    """

    def __init__(self, dim: int, num_heads: int, window_size: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window_size * window_size))
        self.register_buffer("attention_bias_idxs", _offset_index(window_size), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B', N, C) -> (B', N, C)
        b, n, _ = x.shape
        hs = self.head_dim
        qkv = self.qkv(self.norm(x)).view(b, n, self.num_heads, 3 * hs)
        q, k, v = (t.permute(0, 2, 1, 3) for t in qkv.split([hs, hs, hs], dim=3))  # (B', nh, N, hs)
        bias = self.attention_biases[:, self.attention_bias_idxs]  # (nh, N, N)
        attn = (q @ k.transpose(-2, -1)) * self.scale + bias
        out = attn.softmax(dim=-1) @ v  # (B', nh, N, hs)
        return self.proj(out.transpose(1, 2).reshape(b, n, -1))


class TinyViTBlock(nn.Module):
    """Window attention (+ residual), depthwise 3x3 conv-BN, MLP (+ residual) on (B, L, C)."""

    def __init__(
        self,
        dim: int,
        input_resolution: tuple[int, int],
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
    ) -> None:
        super().__init__()
        self.input_resolution = input_resolution
        self.window_size = window_size
        self.attn = TinyAttention(dim, num_heads, window_size)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.local_conv = Conv2dBN(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, C) -> (B, L, C)
        h, w = self.input_resolution
        b, length, c = x.shape
        ws = self.window_size
        windows, pad_hw = window_partition(x.view(b, h, w, c), ws)  # (B*nW, ws, ws, C)
        y = self.attn(windows.view(-1, ws * ws, c)).view(-1, ws, ws, c)
        x = x + window_unpartition(y, ws, pad_hw, (h, w)).view(b, length, c)
        x = self.local_conv(x.transpose(1, 2).reshape(b, c, h, w))
        x = x.view(b, c, length).transpose(1, 2)
        return x + self.mlp(x)


class BasicLayer(nn.Module):
    """Stages 1-3: TinyViT blocks, then (except the last stage) patch merging."""

    def __init__(
        self,
        dim: int,
        input_resolution: tuple[int, int],
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        downsample: PatchMerging | None,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TinyViTBlock(dim, input_resolution, num_heads, window_size, mlp_ratio)
            for _ in range(depth)
        )
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            checkpoint()  # a cancelled job stops here, within one block
            x = blk(x)
        return x if self.downsample is None else self.downsample(x)


class TinyViT(nn.Module):
    """(B, 3, S, S) normalised image -> (B, out_chans, S/16, S/16) embedding."""

    def __init__(self, config: TinyViTEncoderConfig, image_size: int) -> None:
        super().__init__()
        self.img_size = image_size
        dims, depths = config.embed_dims, config.depths
        n_stages = len(depths)
        self.patch_embed = PatchEmbed(3, dims[0])
        res = image_size // 4
        # stage i runs at res / 2^i, except the last which keeps the previous resolution
        resolutions = [res // 2 ** min(i, n_stages - 2) for i in range(n_stages)]
        self.out_size = resolutions[-1]
        self.layers = nn.ModuleList()
        for i in range(n_stages):
            size = (resolutions[i], resolutions[i])
            downsample = None
            if i < n_stages - 1:
                stride = resolutions[i] // resolutions[i + 1]
                downsample = PatchMerging(size, dims[i], dims[i + 1], stride)
            if i == 0:
                layer: nn.Module = ConvLayer(
                    dims[0], depths[0], config.mbconv_expand_ratio, downsample
                )
            else:
                layer = BasicLayer(
                    dims[i],
                    size,
                    depths[i],
                    config.num_heads[i],
                    config.window_sizes[i],
                    config.mlp_ratio,
                    downsample,
                )
            self.layers.append(layer)
        self.apply(_init_weights)
        out = config.out_chans
        self.neck = nn.Sequential(
            nn.Conv2d(dims[-1], out, kernel_size=1, bias=False),
            LayerNorm2d(out),
            nn.Conv2d(out, out, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)  # (B, C0, S/4, S/4)
        for layer in self.layers:
            x = layer(x)  # tokens (B, L, C) after the first stage
        b, _, c = x.shape
        x = x.view(b, self.out_size, self.out_size, c).permute(0, 3, 1, 2)
        return self.neck(x)  # (B, out_chans, S/16, S/16)


def _init_weights(m: nn.Module) -> None:
    """MobileSAM's initialisation: truncated normal linears, unit LayerNorms."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.constant_(m.bias, 0.0)
    elif isinstance(m, nn.LayerNorm):
        nn.init.constant_(m.bias, 0.0)
        nn.init.constant_(m.weight, 1.0)
