"""Architecture configurations of the SAM family, as frozen dataclasses, and their registry.

Every number that shapes a model lives here once: image size, patch size, pixel statistics,
encoder widths. Code elsewhere reads them from a :class:`SamConfig`, never re-types them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# ImageNet statistics on the 0-255 scale, as SAM was trained (non-persistent buffers).
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class ViTEncoderConfig:
    """A plain ViT image encoder with windowed + global attention (SAM's vit_b/l/h)."""

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    window_size: int = 14
    mlp_ratio: float = 4.0
    use_rel_pos: bool = True
    out_chans: int = 256


@dataclass(frozen=True)
class TinyViTEncoderConfig:
    """The TinyViT image encoder of MobileSAM (vit_t): a conv stage then 3 attention stages."""

    embed_dims: tuple[int, ...] = (64, 128, 160, 320)
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (2, 4, 5, 10)
    window_sizes: tuple[int, ...] = (7, 7, 14, 7)
    mlp_ratio: float = 4.0
    mbconv_expand_ratio: float = 4.0
    out_chans: int = 256


EncoderConfig = ViTEncoderConfig | TinyViTEncoderConfig


@dataclass(frozen=True)
class SamConfig:
    """One SAM architecture: image encoder + the standard prompt encoder and mask decoder.

    ``image_size`` is the side of the square model input (longest image side resized to it,
    zero padded bottom / right); ``patch_size`` the encoder's total downsampling, so the image
    embedding is ``(256, image_size // patch_size, image_size // patch_size)`` and the low-res
    mask logits are 4x that.
    """

    name: str
    encoder: EncoderConfig
    image_size: int = 1024
    patch_size: int = 16
    prompt_embed_dim: int = 256
    pixel_mean: tuple[float, float, float] = PIXEL_MEAN
    pixel_std: tuple[float, float, float] = PIXEL_STD
    mask_threshold: float = 0.0
    description: str = field(default="", compare=False)
    #: the model's own automatic-mode settings, a name in ``napari_sam.automatic.PRESETS``
    #: (what CLI, Python API and widget start from when the user gives none)
    auto_preset: str = field(default="default", compare=False)
    #: the model's settings for the instance-decoder modes (AIS / APG), a name in
    #: ``napari_sam.automatic.config.DECODER_PRESETS``
    auto_decoder_preset: str = field(default="default", compare=False)
    #: multimask "auto": (prompt family, mode) pairs (``napari_sam.predictor.mask_choice``);
    #: a family not named gets the single-mask output. SAM's authors' rule by default: a
    #: single click is ambiguous (the best of three), anything more is not.
    auto_multimask: tuple[tuple[str, str], ...] = field(default=(("click", "best"),),
                                                        compare=False)

    @property
    def embedding_size(self) -> int:
        """Side of the image embedding grid (64 for the official models)."""
        return self.image_size // self.patch_size

    @property
    def low_res_mask_size(self) -> int:
        """Side of the low-res mask logits the decoder returns (256 for the official models)."""
        return 4 * self.embedding_size


REGISTRY: dict[str, SamConfig] = {}


def register(config: SamConfig) -> SamConfig:
    """Add ``config`` to the registry under its name (names are unique)."""
    if config.name in REGISTRY:
        raise ValueError(f"a model configuration named {config.name!r} is already registered")
    REGISTRY[config.name] = config
    return config


def get_config(name: str) -> SamConfig:
    """The registered configuration called ``name``; a clear error lists the known names."""
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise KeyError(f"unknown model architecture {name!r}; known: {known}") from None


VIT_B = register(
    SamConfig(
        "vit_b",
        ViTEncoderConfig(embed_dim=768, depth=12, num_heads=12, global_attn_indexes=(2, 5, 8, 11)),
        description="SAM ViT-B (93.7M parameters)",
    )
)
VIT_L = register(
    SamConfig(
        "vit_l",
        ViTEncoderConfig(
            embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23)
        ),
        description="SAM ViT-L (312.3M parameters)",
    )
)
VIT_H = register(
    SamConfig(
        "vit_h",
        ViTEncoderConfig(
            embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31)
        ),
        description="SAM ViT-H (641.1M parameters)",
    )
)
VIT_T = register(
    SamConfig("vit_t", TinyViTEncoderConfig(), description="MobileSAM TinyViT (10.1M parameters)")
)
# The bundled model (training/, docs/training.md): a small ViT on a 512 input, 32 x 32 grid,
# with the standard prompt encoder and mask decoder; trained on synthetic nuclei only.
VIT_NANO = register(
    SamConfig(
        "vit_nano",
        ViTEncoderConfig(
            embed_dim=128, depth=6, num_heads=4, global_attn_indexes=(2, 5), window_size=8
        ),
        image_size=512,
        description="napari-sam bundled nano SAM for nuclei (6.1M parameters, 512 input)",
        auto_preset="nuclei-bundled",
        auto_decoder_preset="nuclei-bundled",
        # measured on nuclei we did not make and on ours (docs/prompting.md): a click gets
        # the best of all four masks (the single-mask output is often it), the rest the
        # single-mask output, which beats the best of three for every family
        auto_multimask=(("click", "any"),),
    )
)
