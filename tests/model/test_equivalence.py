"""Our SAM family against the official implementations (segment_anything, mobile_sam).

Both sides get the same random weights (saved by one, loaded strictly by the other, both
ways) and the same inputs; image embeddings, low-res mask logits and IoU predictions must
agree in float32 to 1e-4 of the output scale, and thresholded masks must be identical
wherever the reference logit is not itself within that tolerance of the threshold.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest
import torch
from mobile_sam import sam_model_registry as mobile_registry
from segment_anything import modeling as sam_modeling

from napari_sam.model import build_sam, get_config
from napari_sam.model.config import SamConfig
from napari_sam.model.sam import Sam

# The key lists of MODELS.md: shared/ lies beside the repository (as CI checks it out).
REFERENCE_DIR = next(
    p
    for p in (
        Path(__file__).resolve().parents[3] / "shared" / "reference",
        Path("/work/shared/reference"),
    )
    if p.is_dir()
)
MOBILE_HEAD = ("image_encoder.norm_head.", "image_encoder.head.")
REL_TOL = 1e-4


def reference_sam(config: SamConfig) -> torch.nn.Module:
    """The official SAM built with ``config``'s numbers (the official builder, resized)."""
    enc = config.encoder
    grid = config.embedding_size
    return sam_modeling.Sam(
        image_encoder=sam_modeling.ImageEncoderViT(
            depth=enc.depth,
            embed_dim=enc.embed_dim,
            img_size=config.image_size,
            mlp_ratio=enc.mlp_ratio,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=enc.num_heads,
            patch_size=config.patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=list(enc.global_attn_indexes),
            window_size=enc.window_size,
            out_chans=config.prompt_embed_dim,
        ),
        prompt_encoder=sam_modeling.PromptEncoder(
            embed_dim=config.prompt_embed_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(config.image_size, config.image_size),
            mask_in_chans=16,
        ),
        mask_decoder=sam_modeling.MaskDecoder(
            num_multimask_outputs=3,
            transformer=sam_modeling.TwoWayTransformer(
                depth=2, embedding_dim=config.prompt_embed_dim, mlp_dim=2048, num_heads=8
            ),
            transformer_dim=config.prompt_embed_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
    ).eval()


def randomize_(module: torch.nn.Module, seed: int) -> None:
    """Give every parameter and float buffer random, well-scaled values (non-zero rel-pos)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if not t.is_floating_point():
                continue
            noise = torch.randn(t.shape, generator=gen)
            if name.endswith("running_var"):
                t.copy_(noise.abs() + 0.5)
            elif t.ndim == 1 and name.endswith("weight"):
                t.copy_(1.0 + 0.1 * noise)
            elif t.ndim == 1:
                t.copy_(0.1 * noise)
            elif "rel_pos" in name or "pos_embed" in name or "attention_biases" in name:
                t.copy_(0.5 * noise)
            elif "positional_encoding_gaussian_matrix" in name:
                t.copy_(noise)
            else:
                fan_in = t[0].numel() if t.ndim > 1 else 1
                t.copy_(noise / max(fan_in, 1) ** 0.5)


def transfer(src: torch.nn.Module, dst: torch.nn.Module, drop: tuple[str, ...] = ()) -> None:
    """Copy ``src``'s state_dict into ``dst`` strictly (keys in ``drop`` removed first)."""
    state = {k: v.clone() for k, v in src.state_dict().items() if not k.startswith(drop)}
    dst.load_state_dict(state, strict=True)


def assert_close(ours: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    assert ours.shape == ref.shape, what
    if ref.numel() == 0:
        return
    scale = max(ref.abs().max().item(), 1.0)
    diff = (ours - ref).abs().max().item()
    assert diff <= REL_TOL * scale, f"{what}: max abs diff {diff:.3g} (scale {scale:.3g})"


def assert_masks_match(ours: torch.Tensor, ref: torch.Tensor) -> None:
    band = REL_TOL * max(ref.abs().max().item(), 1.0)
    differ = (ours > 0) != (ref > 0)
    assert not (differ & (ref.abs() > band)).any()


def prompt_cases(size: int, grid: int) -> dict[str, dict]:
    """The prompt kinds of the brief, in model-input pixels, batch 1."""
    g = torch.Generator().manual_seed(3)
    pt = torch.tensor([[[0.4 * size, 0.55 * size]]])
    neg = torch.tensor([[[0.4 * size, 0.55 * size], [0.7 * size, 0.2 * size]]])
    box = torch.tensor([[0.2 * size, 0.25 * size, 0.75 * size, 0.8 * size]])
    mask = torch.randn((1, 1, 4 * grid, 4 * grid), generator=g) * 3
    return {
        "point": {"points": (pt, torch.tensor([[1]])), "boxes": None, "masks": None},
        "point+negative": {"points": (neg, torch.tensor([[1, 0]])), "boxes": None, "masks": None},
        "box": {"points": None, "boxes": box, "masks": None},
        "box+points": {"points": (neg, torch.tensor([[1, 0]])), "boxes": box, "masks": None},
        "mask+point": {"points": (pt, torch.tensor([[1]])), "boxes": None, "masks": mask},
        "mask": {"points": None, "boxes": None, "masks": mask},
    }


def compare_end_to_end(ours: Sam, ref: torch.nn.Module, image: torch.Tensor) -> None:
    size = ours.config.image_size
    with torch.no_grad():
        emb_ref = ref.image_encoder(image)
        emb_ours = ours.encode(image)
        assert_close(emb_ours, emb_ref, "image embedding")
        pe_ref = ref.prompt_encoder.get_dense_pe()
        assert_close(ours.prompt_encoder.get_dense_pe(), pe_ref, "dense pe")
        for name, prompt in prompt_cases(size, ours.config.embedding_size).items():
            sp_r, de_r = ref.prompt_encoder(**prompt)
            sp_o, de_o = ours.prompt_encoder(**prompt)
            assert_close(sp_o, sp_r, f"{name}: sparse")
            assert_close(de_o, de_r, f"{name}: dense")
            for multimask in (True, False):
                m_r, iou_r = ref.mask_decoder(emb_ref, pe_ref, sp_r, de_r, multimask)
                # our decoder on our own embeddings: the whole chain is compared
                m_o, iou_o = ours.mask_decoder(
                    emb_ours, ours.prompt_encoder.get_dense_pe(), sp_o, de_o, multimask
                )
                low_res = 4 * emb_ref.shape[-1]
                assert m_o.shape == (1, 3 if multimask else 1, low_res, low_res)
                assert_close(m_o, m_r, f"{name} multimask={multimask}: logits")
                assert_close(iou_o, iou_r, f"{name} multimask={multimask}: iou")
                assert_masks_match(m_o, m_r)


@pytest.fixture(scope="module")
def image_224() -> torch.Tensor:
    return torch.randn((1, 3, 224, 224), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("direction", ["ours_to_ref", "ref_to_ours"])
def test_vit_b_end_to_end_small_input(direction: str, image_224: torch.Tensor) -> None:
    """All 12 blocks at 224x224: a 14x14 grid, one window exactly (no padding)."""
    config = SamConfig("vit_b_224", get_config("vit_b").encoder, image_size=224)
    ours, ref = build_sam(config), reference_sam(config)
    if direction == "ours_to_ref":
        randomize_(ours, seed=0)
        transfer(ours, ref)
    else:
        randomize_(ref, seed=1)
        transfer(ref, ours)
    compare_end_to_end(ours, ref, image_224)


def test_vit_b_patch8_batched_image_encoder() -> None:
    config = SamConfig("vit_b_p8", get_config("vit_b").encoder, image_size=112, patch_size=8)
    ours, ref = build_sam(config), reference_sam(config)
    randomize_(ref, seed=2)
    transfer(ref, ours)
    image = torch.randn((2, 3, 112, 112), generator=torch.Generator().manual_seed(4))
    compare_end_to_end(ours, ref, image[:1])
    with torch.no_grad():
        assert_close(ours.encode(image), ref.image_encoder(image), "batch of 2 embeddings")


def test_vit_t_end_to_end() -> None:
    """TinyViT: MobileSAM hard-codes the 64x64 output grid, so this runs at 1024."""
    ours = build_sam("vit_t")
    ref = mobile_registry["vit_t"]()
    randomize_(ref, seed=5)
    transfer(ref, ours, drop=MOBILE_HEAD)
    ref.eval()  # MobileSAM caches its attention biases on eval(): refresh after loading
    # the other direction: everything but MobileSAM's unused classifier head
    missing, unexpected = ref.load_state_dict(ours.state_dict(), strict=False)
    assert not unexpected
    assert sorted(missing) == sorted(k for k in ref.state_dict() if k.startswith(MOBILE_HEAD))
    image = torch.randn((1, 3, 1024, 1024), generator=torch.Generator().manual_seed(6))
    compare_end_to_end(ours, ref, image)


def truncated(config: SamConfig, image_size: int) -> SamConfig:
    """``config`` cut after its first global-attention block, at ``image_size``.

    Keeps width, heads, head size, window size and a full-grid global block (the parts a
    full-size forward exercises) at a fraction of the cost of every block.
    """
    enc = config.encoder
    first_global = enc.global_attn_indexes[0]
    enc = replace(enc, depth=first_global + 1, global_attn_indexes=(first_global,))
    return SamConfig(f"{config.name}_cut_{image_size}", enc, image_size=image_size)


def test_vit_b_full_size_image_encoder() -> None:
    """vit_b at 1024x1024: global attention over 64x64 tokens with 127-long rel-pos tables.

    Blocks 0-2 (two windowed, one global): every block kind at full size; all 12 blocks
    would cost ~25 s per side on a 2-core CPU.
    """
    config = truncated(get_config("vit_b"), 1024)
    ours, ref = build_sam(config), reference_sam(config)
    randomize_(ours, seed=7)
    transfer(ours, ref)
    image = torch.randn((1, 3, 1024, 1024), generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        assert_close(ours.encode(image), ref.image_encoder(image), "vit_b 1024 embedding")


def reference_keys(name: str) -> dict[str, tuple[int, ...]]:
    keys = {}
    for line in (REFERENCE_DIR / f"{name}_keys.txt").read_text().splitlines():
        key, shape, _dtype = line.split("\t")
        keys[key] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    return keys


@pytest.mark.parametrize("name", ["vit_b", "vit_l", "vit_h", "vit_t"])
def test_state_dict_layout_matches_published_keys(name: str) -> None:
    with torch.device("meta"):
        ours = build_sam(name)
    got = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    want = {k: s for k, s in reference_keys(name).items() if not k.startswith(MOBILE_HEAD)}
    assert got == want
    assert "pixel_mean" not in got and "pixel_std" not in got


@pytest.mark.parametrize("name", ["vit_l", "vit_h"])
def test_large_models_match_reference_builder_and_reduced_forward(name: str) -> None:
    full = get_config(name)
    with torch.device("meta"):
        ours_meta = build_sam(full)
        ref_meta = reference_sam(full)
    ref_layout = {k: tuple(v.shape) for k, v in ref_meta.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in ours_meta.state_dict().items()} == ref_layout

    # a forward at a reduced input size: the same width, heads (head size 80 for vit_h) and
    # windows, cut after the first global block to keep the weights small
    config = truncated(full, 128)
    ours, ref = build_sam(config), reference_sam(config)
    randomize_(ref, seed=9)
    transfer(ref, ours)
    image = torch.randn((1, 3, 128, 128), generator=torch.Generator().manual_seed(10))
    with torch.no_grad():
        assert_close(ours.encode(image), ref.image_encoder(image), f"{name} embedding")
