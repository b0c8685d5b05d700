"""The public model API: build, encode, compute dtype, training gradients, grid sizes."""

from __future__ import annotations

import pytest
import torch

from napari_sam.model import Sam, build_sam, get_config
from napari_sam.model.config import SamConfig, TinyViTEncoderConfig, ViTEncoderConfig
from napari_sam.model.layers import chunked_rel_pos_attention, rel_pos_attention


def small_vit(image_size: int = 128, patch_size: int = 16) -> SamConfig:
    enc = ViTEncoderConfig(embed_dim=64, depth=2, num_heads=2, global_attn_indexes=(1,))
    return SamConfig("small", enc, image_size=image_size, patch_size=patch_size)


@pytest.fixture(scope="module")
def small() -> Sam:
    torch.manual_seed(0)
    return build_sam(small_vit())


def test_build_by_name_is_eval_and_has_config() -> None:
    with torch.device("meta"):
        sam = build_sam("vit_b")
    assert isinstance(sam, Sam)
    assert sam.config == get_config("vit_b")
    assert not sam.training
    assert sam.compute_dtype == torch.float32


def test_pixel_statistics_are_non_persistent_buffers(small: Sam) -> None:
    assert "pixel_mean" not in small.state_dict()
    assert torch.equal(small.pixel_mean.flatten(), torch.tensor(small.config.pixel_mean))
    x = torch.full((1, 3, 4, 4), 123.675)
    assert small.normalize(x)[0, 0].abs().max() < 1e-6


def test_encode_shape_dtype_and_no_autograd(small: Sam) -> None:
    images = torch.randn(2, 3, 128, 128, requires_grad=True)
    emb = small.encode(images)
    assert emb.shape == (2, 256, 8, 8)
    assert emb.dtype == torch.float32
    assert not emb.requires_grad
    with pytest.raises(ValueError, match="expected images"):
        small.encode(torch.randn(1, 3, 64, 64))


def test_chunked_attention_equals_plain_attention() -> None:
    g = torch.Generator().manual_seed(0)
    bh, h, w, hs = 3, 6, 5, 8
    q, k, v = (torch.randn(bh, h * w, hs, generator=g) for _ in range(3))
    rel_h, rel_w = torch.randn(bh, h * w, h, generator=g), torch.randn(bh, h * w, w, generator=g)
    plain = rel_pos_attention(q, k, v, rel_h, rel_w, 0.3, (h, w))
    for chunk in (1, 7, 30, 64):  # uneven last chunk, exact, larger than T
        got = chunked_rel_pos_attention(q, k, v, rel_h, rel_w, 0.3, (h, w), chunk=chunk)
        torch.testing.assert_close(got, plain, rtol=1e-5, atol=1e-5)


def test_training_forward_is_differentiable_everywhere() -> None:
    torch.manual_seed(1)
    sam = build_sam(small_vit(image_size=64, patch_size=8)).train()
    images = torch.randn(2, 3, 64, 64)
    points = (torch.rand(2, 3, 2) * 64, torch.tensor([[1, 0, 1], [1, 1, 0]]))
    boxes = torch.tensor([[4.0, 4.0, 40.0, 50.0], [10.0, 8.0, 60.0, 30.0]])
    masks = torch.randn(2, 1, 32, 32)
    logits, iou = sam(images, points, boxes, masks, multimask_output=True)
    assert logits.shape == (2, 3, 32, 32) and iou.shape == (2, 3)
    # points alone (padding token) without a mask: the remaining embeddings are used
    single, iou1 = sam(images, points, None, None, multimask_output=False)
    assert single.shape == (2, 1, 32, 32) and iou1.shape == (2, 1)
    loss = logits.square().mean() + iou.mean() + single.square().mean() + iou1.mean()
    loss.backward()
    no_grad = [n for n, p in sam.named_parameters() if p.grad is None or not p.grad.any()]
    assert no_grad == []


@pytest.mark.parametrize("patch_size", [8, 16])
def test_decoder_follows_the_embedding_grid(patch_size: int) -> None:
    torch.manual_seed(2)
    sam = build_sam(small_vit(image_size=512, patch_size=patch_size))
    grid = 512 // patch_size
    emb = sam.encode(torch.randn(1, 3, 512, 512))
    assert emb.shape == (1, 256, grid, grid)
    pts = (torch.tensor([[[100.0, 200.0], [300.0, 50.0]]]).expand(4, -1, -1), torch.ones(4, 2))
    sparse, dense = sam.prompt_encoder(pts, None, None)
    pe = sam.prompt_encoder.get_dense_pe()
    assert pe.shape == (1, 256, grid, grid)
    with torch.no_grad():
        logits, iou = sam.mask_decoder(emb, pe, sparse, dense, multimask_output=False)
    assert logits.shape == (4, 1, 4 * grid, 4 * grid) and iou.shape == (4, 1)
    torch.testing.assert_close(logits[0], logits[3])  # one image embedding shared by 4 prompts


def test_tiny_vit_is_generic_in_image_size() -> None:
    torch.manual_seed(3)
    enc = TinyViTEncoderConfig()
    sam = build_sam(SamConfig("vit_t_256", enc, image_size=256))
    assert sam.encode(torch.randn(1, 3, 256, 256)).shape == (1, 256, 16, 16)


def test_reduced_precision_encode_stays_close_and_returns_float32() -> None:
    torch.manual_seed(4)
    sam = build_sam(small_vit())
    images = torch.randn(1, 3, 128, 128)
    full = sam.encode(images)
    sam.set_compute_dtype(torch.bfloat16)
    assert sam.compute_dtype == torch.bfloat16
    assert next(sam.image_encoder.parameters()).dtype == torch.bfloat16
    assert next(sam.mask_decoder.parameters()).dtype == torch.float32
    low = sam.encode(images)
    assert low.dtype == torch.float32
    # the neck ends in a LayerNorm: unit-scale outputs; bf16 has ~3 significant digits
    assert (low - full).abs().max() < 0.1
    with pytest.raises(ValueError):
        sam.set_compute_dtype(torch.int8)
