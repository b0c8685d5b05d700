"""Inference form of the mask decoder: the same function as :class:`MaskDecoder`, computed
in the order that makes its cost scale with the few prompt tokens, not the 4096 image ones.

- Per image: without a mask prompt, the first layer's image-side projections are the same
  for every prompt; :func:`prepare_image` computes them once (an :class:`ImageState`).
- Token -> image attention: ``q (W_k x)^T = (q W_k) x^T`` and ``softmax (x W_v) =
  (softmax x) W_v``: (H*T, C) @ (C, N) products instead of projecting N image rows.
- Image -> token attention: scores ``x (W_q^T k^T)``, output ``sum_h P_h (v_h W_o,h)``.
  Both need H*T <= D (heads x tokens vs internal dim); otherwise the plain projections run.
- Output upscaling: the two stride-2, kernel-2 transposed convolutions do not overlap, so
  each image token owns a 4 x 4 block of the low-res logits: two matmuls per token, the
  hypernetwork vectors applied before anything is laid out as an image, only for the masks
  asked for.

No autograd: :func:`prepare_image` and :func:`decode` run in ``torch.inference_mode``. Shapes: ``B`` prompts, ``T`` tokens,
``N = h*w`` image tokens, ``C`` channels (256), ``H`` heads, ``D`` attention internal dim,
``d = D / H``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .mask_decoder import MaskDecoder
from .transformer import Attention, TwoWayAttentionBlock


@dataclass(frozen=True, eq=False)
class ImageState:
    """Image-side tensors shared by all prompts on one image.

    keys: (Bk, N, C) image embedding + dense prompt embedding as rows (Bk 1 or B);
    key_pe: (1, N, C) position encoding; hw: the grid (h, w). Without a mask prompt also
    the first layer's token->image keys / values ``k1``, ``v1`` and image->token queries
    ``q1``, each (1, H, N, d); else None.
    """

    keys: Tensor
    key_pe: Tensor
    hw: tuple[int, int]
    k1: Tensor | None = None
    v1: Tensor | None = None
    q1: Tensor | None = None


def _split_heads(x: Tensor, heads: int) -> Tensor:  # (B, N, D) -> (B, H, N, d)
    b, n, d = x.shape
    return x.view(b, n, heads, d // heads).transpose(1, 2)


@torch.inference_mode()
def prepare_image(
    decoder: MaskDecoder,
    image_embedding: Tensor,
    image_pe: Tensor,
    dense: Tensor,
    *,
    shared: bool,
) -> ImageState:
    """The image side of a decode: image_embedding (1, C, h, w), image_pe (1, C, h, w),
    dense (Bk, C, h | 1, w | 1) prompt embedding (Bk 1 or B).

    ``shared``: the state will serve many decodes (one dense embedding for every prompt:
    no mask prompt); the first layer's image-side projections are then computed here, once.
    """
    h, w = image_embedding.shape[-2:]
    keys = (image_embedding + dense).flatten(2).transpose(1, 2).contiguous()  # (Bk, N, C)
    key_pe = image_pe.flatten(2).transpose(1, 2).contiguous()  # (1, N, C)
    if not shared or keys.shape[0] != 1:
        return ImageState(keys, key_pe, (h, w))
    layer = decoder.transformer.layers[0]
    t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
    x_k = keys + key_pe
    return ImageState(
        keys,
        key_pe,
        (h, w),
        k1=_split_heads(t2i.k_proj(x_k), t2i.num_heads).contiguous(),
        v1=_split_heads(t2i.v_proj(keys), t2i.num_heads).contiguous(),
        q1=_split_heads(i2t.q_proj(x_k), i2t.num_heads).contiguous(),
    )


# Image rows per chunk in the row-wise steps: their temporaries (rows, C) stay in cache and
# come from reused allocations instead of pages faulted in afresh on every decode.
CHUNK_ROWS = 512


def _chunks(n: int, b: int) -> list[slice]:
    rows = max(64, CHUNK_ROWS // b)
    return [slice(i, min(i + rows, n)) for i in range(0, n, rows)]


# ------------------------------------------------------------------ token -> image


def _token_to_image_cached(attn: Attention, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """q (B, T, C) tokens; k, v (1, H, N, d) projected image rows shared by all B.
    Returns (B, T, C)."""
    b, t, _ = q.shape
    heads = attn.num_heads
    qh = attn.q_proj(q).view(1, b * t, heads, -1).transpose(1, 2)  # (1, H, B*T, d)
    out = F.scaled_dot_product_attention(qh, k, v)  # (1, H, B*T, d)
    return attn.out_proj(out.transpose(1, 2).reshape(b, t, attn.internal_dim))


def _token_to_image(attn: Attention, q: Tensor, keys: Tensor, x: Tensor) -> Tensor:
    """q (B, T, C) tokens attend to image rows: keys ``x`` (= keys + position encoding),
    values ``keys``, both (Bk, N, C) before projection, Bk 1 or B. Returns (B, T, C)."""
    b, t, c = q.shape
    bk = keys.shape[0]
    heads, dim = attn.num_heads, attn.internal_dim
    if heads * t > dim:
        return attn(q=q, k=x.expand(b, -1, -1), v=keys.expand(b, -1, -1))
    d = dim // heads
    qh = _split_heads(attn.q_proj(q), heads) * d**-0.5  # (B, H, T, d)
    # q_h . (W_k,h x + b_k,h) = (q_h W_k,h) . x + const per query row (softmax ignores it)
    q_in = (qh @ attn.k_proj.weight.view(heads, d, c)).reshape(bk, -1, c)  # (Bk, B/Bk*H*T, C)
    probs = torch.softmax(q_in @ x.transpose(1, 2), dim=-1)  # (Bk, B/Bk*H*T, N)
    px = (probs @ keys).view(b, heads, t, c)  # (B, H, T, C)
    wv = attn.v_proj.weight.view(heads, d, c).transpose(1, 2)  # (H, C, d)
    out = px @ wv + attn.v_proj.bias.view(heads, 1, d)  # (B, H, T, d): rows of probs sum to 1
    return attn.out_proj(out.transpose(1, 2).reshape(b, t, dim))


# ------------------------------------------------------------------ image -> token


def _out_folded(attn: Attention, v: Tensor) -> Tensor:
    """Token values (B, T, C) -> per-head values through the out projection (B, H*T, C),
    plus out_proj.bias / H: each head's attention row sums to 1, so P @ result carries the
    bias once."""
    b, t, c = v.shape
    heads = attn.num_heads
    vh = _split_heads(attn.v_proj(v), heads)  # (B, H, T, d)
    wo = attn.out_proj.weight.view(c, heads, -1).permute(1, 2, 0)  # (H, d, C)
    return (vh @ wo + attn.out_proj.bias / heads).view(b, heads * t, c)


def _update_image(
    layer: TwoWayAttentionBlock,
    keys: Tensor,
    x: Tensor,
    key_pe: Tensor,
    k: Tensor,
    v: Tensor,
    q1: Tensor | None,
    out: tuple[Tensor, Tensor],
) -> tuple[Tensor, Tensor]:
    """``norm4(keys + image->token attention)``: image rows x (= keys + key_pe) attend to
    the tokens (keys k, values v, (B, T, C)). keys and x (Bk, N, C), key_pe (1, N, C); q1
    the cached (1, H, N, d) projected queries or None. Computed a chunk of rows at a time
    into ``out`` (two (B, N, C) buffers; may be keys and x themselves): the new keys and
    keys + key_pe, which are returned."""
    attn, norm = layer.cross_attn_image_to_token, layer.norm4
    b, t, c = k.shape
    n = keys.shape[1]
    heads, dim = attn.num_heads, attn.internal_dim
    if q1 is None and heads * t > dim:
        out[0][:] = norm(keys + attn(q=x, k=k, v=v))
        torch.add(out[0], key_pe, out=out[1])
        return out
    d = dim // heads
    kh = _split_heads(attn.k_proj(k), heads) * d**-0.5  # (B, H, T, d)
    if q1 is not None:
        kh = kh.transpose(0, 1).reshape(heads, b * t, d)  # (H, B*T, d)
    else:
        wq = attn.q_proj.weight.view(heads, d, c)  # (H, d, C)
        k_in = (kh @ wq).view(b, heads * t, c)  # (B, H*T, C)
        bias = (kh @ attn.q_proj.bias.view(heads, d, 1)).view(b, heads * t, 1)  # b_q . k
    folded = _out_folded(attn, v)  # (B, H*T, C)
    new, new_x = out
    for rows in _chunks(n, b):
        # scores laid out (.., T, rows): the softmax over T runs along contiguous rows
        if q1 is not None:
            scores = (kh @ q1[0, :, rows].transpose(1, 2)).view(heads, b, t, -1)
            probs = torch.softmax(scores, dim=2).transpose(0, 1).reshape(b, heads * t, -1)
        else:
            scores = torch.baddbmm(bias, k_in, x[:, rows].transpose(1, 2))
            probs = torch.softmax(scores.view(b, heads, t, -1), dim=2).view(b, heads * t, -1)
        z = torch.baddbmm(keys[:, rows], probs.transpose(1, 2), folded)  # (B, rows, C)
        new[:, rows] = F.layer_norm(z, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
        torch.add(new[:, rows], key_pe[:, rows], out=new_x[:, rows])
    return out


# ------------------------------------------------------------------ transformer


def _layer(
    layer: TwoWayAttentionBlock,
    queries: Tensor,
    query_pe: Tensor,
    keys: Tensor,
    x: Tensor,
    key_pe: Tensor,
    first: ImageState | None,
    out: tuple[Tensor, Tensor],
) -> tuple[Tensor, Tensor, Tensor]:
    """One two-way block: queries (B, T, C), keys and x = keys + key_pe (Bk, N, C) ->
    queries (B, T, C), keys and x (B, N, C). ``first``: the cached projections of these
    keys (first layer, no mask prompt); ``out``: buffers for the new keys and x."""
    if layer.skip_first_layer_pe:
        queries = layer.self_attn(q=queries, k=queries, v=queries)
    else:
        q = queries + query_pe
        queries = queries + layer.self_attn(q=q, k=q, v=queries)
    queries = layer.norm1(queries)

    q = queries + query_pe
    t2i = layer.cross_attn_token_to_image
    if first is not None:
        attended = _token_to_image_cached(t2i, q, first.k1, first.v1)
    else:
        attended = _token_to_image(t2i, q, keys, x)
    queries = layer.norm2(queries + attended)
    queries = layer.norm3(queries + layer.mlp(queries))

    q = queries + query_pe
    q1 = first.q1 if first is not None else None
    return queries, *_update_image(layer, keys, x, key_pe, q, queries, q1, out)


def transformer_forward(
    decoder: MaskDecoder, image: ImageState, tokens: Tensor, final_tokens: int | None = None
) -> tuple[Tensor, Tensor]:
    """The two-way transformer: tokens (B, T, C) -> tokens (B, T', C), image rows (B, N, C).

    ``final_tokens``: only the first T' tokens go through the final attention (the decoder
    reads only the output tokens); default all.
    """
    transformer = decoder.transformer
    queries, keys, key_pe = tokens, image.keys, image.key_pe
    cached = image.k1 is not None
    x = keys if cached else keys + key_pe  # the cached first layer does not read x
    b, (_, n, c) = tokens.shape[0], keys.shape
    out = (keys.new_empty((b, n, c)), keys.new_empty((b, n, c)))  # every layer writes here
    for i, layer in enumerate(transformer.layers):
        first = image if i == 0 and cached else None
        queries, keys, x = _layer(layer, queries, tokens, keys, x, key_pe, first, out)
    queries, tokens = queries[:, :final_tokens], tokens[:, :final_tokens]
    attended = _token_to_image(transformer.final_attn_token_to_image, queries + tokens, keys, x)
    return transformer.norm_final_attn(queries + attended), keys


# ------------------------------------------------------------------ masks


def upscaled_masks(
    decoder: MaskDecoder, keys: Tensor, hyper: Tensor, hw: tuple[int, int], rows: int = 8
) -> Tensor:
    """Mask logits ``hyper . upscale(keys)`` computed per image token.

    keys (B, N, C) image rows; hyper (B, K, C/8) hypernetwork outputs. Returns
    (B, K, 4h, 4w). ConvTranspose2d(k=2, s=2): ``out[o, 2i+a, 2j+b] = sum_c in[c, i, j]
    W[c, o, a, b] + bias[o]``: token (i, j) alone makes the 2 x 2 (then 4 x 4) block.
    ``rows`` grid rows at a time: the intermediates (rows*w*16, C/8) stay in cache and
    their allocations are reused instead of faulting in fresh pages on every decode.
    """
    conv1, norm, _, conv2, _ = decoder.output_upscaling
    b, _, c = keys.shape
    c4, c8, k = conv1.out_channels, conv2.out_channels, hyper.shape[1]
    h, w = hw
    w1 = conv1.weight.permute(0, 2, 3, 1).reshape(c, 4 * c4)  # columns (a, b, o)
    w2 = conv2.weight.permute(0, 2, 3, 1).reshape(c4, 4 * c8)  # columns (a', b', o)
    b1, b2 = conv1.bias.repeat(4), conv2.bias.repeat(4)
    out = keys.new_empty((b, k, 4 * h, 4 * w))
    for i in range(b):
        for r0 in range(0, h, rows):
            r1 = min(r0 + rows, h)
            x = keys[i, r0 * w : r1 * w]  # (rows*w, C)
            up = torch.addmm(b1, x, w1).view(-1, c4)  # (rows*w*4, C/4)
            up = F.gelu(F.layer_norm(up, (c4,), norm.weight, norm.bias, norm.eps))
            up = F.gelu(torch.addmm(b2, up, w2)).view(-1, c8)  # (rows*w*16, C/8)
            masks = hyper[i] @ up.T  # (K, rows*w*16) over (i, j, a, b, a', b')
            masks = masks.view(k, r1 - r0, w, 2, 2, 2, 2).permute(0, 1, 3, 5, 2, 4, 6)
            out[i, :, 4 * r0 : 4 * r1].view(k, r1 - r0, 2, 2, w, 2, 2).copy_(masks)
    return out


@torch.inference_mode()
def decode(
    decoder: MaskDecoder, image: ImageState, sparse: Tensor, multimask_output: bool | None
) -> tuple[Tensor, Tensor]:
    """:meth:`MaskDecoder.forward`'s result for prompts on ``image``.

    sparse (B, Ns, C) prompt tokens. Returns mask logits (B, K, 4h, 4w) and IoU predictions
    (B, K): K = 3 with ``multimask_output`` (the three ambiguity-aware masks), 1 without (the
    single-mask output), 4 for None (the single-mask output first, then the three).
    """
    b = sparse.shape[0]
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    tokens = torch.cat((output_tokens.expand(b, -1, -1), sparse), dim=1)  # (B, 5 + Ns, C)
    hs, keys = transformer_forward(decoder, image, tokens, output_tokens.shape[0])
    if multimask_output is None:
        sel = range(decoder.num_mask_tokens)
    else:
        sel = range(1, decoder.num_mask_tokens) if multimask_output else range(1)
    mlps = decoder.output_hypernetworks_mlps
    hyper = torch.stack([mlps[i](hs[:, 1 + i]) for i in sel], dim=1)  # (B, K, C/8)
    iou = decoder.iou_prediction_head(hs[:, 0])[:, list(sel)]  # (B, K)
    return upscaled_masks(decoder, keys, hyper, image.hw), iou
