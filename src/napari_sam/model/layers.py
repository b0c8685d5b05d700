"""Building blocks shared by the SAM family: MLPs, a channel LayerNorm, windowing and the
attention with decomposed relative position bias (plain and memory-friendly chunked forms).

Shape conventions: ``B`` batch, ``nh`` heads, ``T`` tokens, ``hs`` head size, ``C`` channels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Query rows per chunk in the chunked attention: the score block (B*nh, rows, T) then stays
# a few MB (fits a large L2 / L3 slice) instead of the 0.8 GB of a full global-attention map.
DEFAULT_QUERY_CHUNK = 256


class MLPBlock(nn.Module):
    """``lin2(act(lin1(x)))``: the transformer feed-forward block (keys ``lin1``, ``lin2``)."""

    def __init__(
        self, embedding_dim: int, mlp_dim: int, act: type[nn.Module] = nn.GELU
    ) -> None:
        super().__init__()
        self.lin1 = nn.Linear(embedding_dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, embedding_dim)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., C) -> (..., C)
        return self.lin2(self.act(self.lin1(x)))


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them (the decoder's heads)."""

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        output_dim: int,
        num_layers: int,
        sigmoid_output: bool = False,
    ) -> None:
        super().__init__()
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims_in, dims_out))
        self.sigmoid_output = sigmoid_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., input_dim) -> (..., output_dim)
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = F.relu(x)
        return torch.sigmoid(x) if self.sigmoid_output else x


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of a (B, C, H, W) tensor (keys ``weight``, ``bias``)."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C, H, W)
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


def window_partition(x: torch.Tensor, window_size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Split (B, H, W, C) into (B * nW, ws, ws, C) windows, zero padding bottom / right.

    Returns the windows and the padded size (Hp, Wp).
    """
    b, h, w, c = x.shape
    pad_h = (window_size - h % window_size) % window_size
    pad_w = (window_size - w % window_size) % window_size
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window_size, window_size, wp // window_size, window_size, c)
    windows = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size, window_size, c)
    return windows, (hp, wp)


def window_unpartition(
    windows: torch.Tensor, window_size: int, pad_hw: tuple[int, int], hw: tuple[int, int]
) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B * nW, ws, ws, C) -> (B, H, W, C), padding cut."""
    hp, wp = pad_hw
    h, w = hw
    b = windows.shape[0] // ((hp // window_size) * (wp // window_size))
    x = windows.view(b, hp // window_size, wp // window_size, window_size, window_size, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
    if hp > h or wp > w:
        x = x[:, :h, :w, :].contiguous()
    return x


def get_rel_pos(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """Relative position embeddings (q_size, k_size, hs) gathered from the table (L, hs).

    The table is linearly resized when its length L is not ``2 * max(q_size, k_size) - 1``.
    """
    max_rel_dist = 2 * max(q_size, k_size) - 1
    if rel_pos.shape[0] != max_rel_dist:
        resized = F.interpolate(
            rel_pos.reshape(1, rel_pos.shape[0], -1).permute(0, 2, 1),
            size=max_rel_dist,
            mode="linear",
        )
        rel_pos = resized.reshape(-1, max_rel_dist).permute(1, 0)
    q_coords = torch.arange(q_size, device=rel_pos.device)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size, device=rel_pos.device)[None, :] * max(q_size / k_size, 1.0)
    relative = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return rel_pos[relative.long()]


def decomposed_rel_pos(
    q: torch.Tensor,
    rel_pos_h: torch.Tensor,
    rel_pos_w: torch.Tensor,
    hw: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two factors of the MViTv2 decomposed relative position bias.

    q: (B*nh, H*W, hs) unscaled queries. Returns rel_h (B*nh, H*W, H) and rel_w (B*nh, H*W, W):
    the bias of query (qh, qw) for key (kh, kw) is ``rel_h[q, kh] + rel_w[q, kw]``.
    """
    h, w = hw
    rh = get_rel_pos(h, h, rel_pos_h).to(q.dtype)  # (H, H, hs)
    rw = get_rel_pos(w, w, rel_pos_w).to(q.dtype)  # (W, W, hs)
    bh, _, hs = q.shape
    r_q = q.reshape(bh, h, w, hs)
    rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, rh).reshape(bh, h * w, h)
    rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, rw).reshape(bh, h * w, w)
    return rel_h, rel_w


def rel_pos_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rel_h: torch.Tensor | None,
    rel_w: torch.Tensor | None,
    scale: float,
    key_hw: tuple[int, int],
) -> torch.Tensor:
    """softmax(scale * q k^T + bias) v, differentiable (the training path).

    q, k, v: (B*nh, T, hs); rel_h (B*nh, T, H), rel_w (B*nh, T, W) or None. Returns (B*nh, T, hs).
    """
    attn = (q * scale) @ k.transpose(-2, -1)  # (B*nh, T, T)
    if rel_h is not None and rel_w is not None:
        bh, t, _ = attn.shape
        kh, kw = key_hw
        attn = (
            attn.view(bh, t, kh, kw) + rel_h[:, :, :, None] + rel_w[:, :, None, :]
        ).view(bh, t, kh * kw)
    return attn.softmax(dim=-1) @ v


def chunked_rel_pos_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rel_h: torch.Tensor | None,
    rel_w: torch.Tensor | None,
    scale: float,
    key_hw: tuple[int, int],
    chunk: int = DEFAULT_QUERY_CHUNK,
) -> torch.Tensor:
    """Inference form of :func:`rel_pos_attention`: same result, no autograd, low memory.

    Query rows are processed ``chunk`` at a time; each score block (B*nh, chunk, T) gets the
    bias added, is exponentiated in place and multiplied by v, and the softmax normalisation
    is applied to the (chunk, hs) output instead of the (chunk, T) scores.
    """
    bh, t, _ = q.shape
    kh, kw = key_hw
    out = torch.empty_like(q, memory_format=torch.contiguous_format)  # (B*nh, T, hs)
    k_t = k.transpose(-2, -1)  # (B*nh, hs, T)
    rows = min(chunk, t)
    buf = q.new_empty((bh, rows, k.shape[1]))
    for start in range(0, t, rows):
        stop = min(start + rows, t)
        n = stop - start
        scores = buf[:, :n]
        torch.bmm(q[:, start:stop] * scale, k_t, out=scores)  # (B*nh, n, T)
        if rel_h is not None and rel_w is not None:
            grid = scores.view(bh, n, kh, kw)
            grid.add_(rel_h[:, start:stop, :, None])
            grid.add_(rel_w[:, start:stop, None, :])
        scores.sub_(scores.amax(dim=-1, keepdim=True)).exp_()
        denom = scores.sum(dim=-1, keepdim=True)  # (B*nh, n, 1)
        chunk_out = out[:, start:stop]
        torch.bmm(scores, v, out=chunk_out)
        chunk_out.div_(denom)
    return out
