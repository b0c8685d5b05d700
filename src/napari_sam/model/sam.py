"""Assembly of a SAM model from a :class:`~napari_sam.model.config.SamConfig`.

``Sam.encode`` is the inference entry point for the image encoder (no autograd, runs in the
model's compute dtype, returns float32); ``Sam.forward`` and the submodules are plain,
differentiable modules for training. State-dict keys match the official checkpoints
(``pixel_mean`` / ``pixel_std`` are non-persistent buffers).
"""

from __future__ import annotations

import torch
from torch import nn

from .config import SamConfig, TinyViTEncoderConfig, ViTEncoderConfig, get_config
from .image_encoder import ImageEncoderViT
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .tiny_vit import TinyViT
from .transformer import TwoWayTransformer


class Sam(nn.Module):
    """Segment Anything: image encoder, prompt encoder and mask decoder.

    Attributes: ``config`` (the architecture), ``image_encoder``, ``prompt_encoder``,
    ``mask_decoder``, and the non-persistent buffers ``pixel_mean`` / ``pixel_std`` (3, 1, 1)
    on the 0-255 scale.
    """

    def __init__(
        self,
        config: SamConfig,
        image_encoder: nn.Module,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
    ) -> None:
        super().__init__()
        self.config = config
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.register_buffer(
            "pixel_mean", torch.tensor(config.pixel_mean).view(-1, 1, 1), persistent=False
        )
        self.register_buffer(
            "pixel_std", torch.tensor(config.pixel_std).view(-1, 1, 1), persistent=False
        )
        self._compute_dtype = torch.float32

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype the image encoder runs in (float32 unless changed)."""
        return self._compute_dtype

    def set_compute_dtype(self, dtype: torch.dtype) -> Sam:
        """Run the image encoder in ``dtype`` (float32, bfloat16 or float16).

        The encoder's weights are cast in place (a reduced-precision copy replaces the fp32
        one: going back to float32 afterwards does not restore the lost bits; reload the
        checkpoint for that). Prompt encoder and mask decoder stay float32: they are cheap.
        ``encode`` casts its input to ``dtype`` and its output back to float32.
        Choose the dtype with :func:`napari_sam.device.resolve_precision`.
        """
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"unsupported compute dtype {dtype}")
        self.image_encoder.to(dtype=dtype)
        self._compute_dtype = dtype
        return self

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) pixels on the 0-255 scale -> normalised by pixel mean / std."""
        return (images - self.pixel_mean) / self.pixel_std

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Image embeddings for inference.

        images: (B, 3, S, S) float, normalised and padded to ``config.image_size``.
        Returns (B, 256, S/16, S/16) float32 on the model's device. No autograd.
        """
        size = self.config.image_size
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[-2:] != (size, size):
            raise ValueError(
                f"expected images of shape (B, 3, {size}, {size}), got {tuple(images.shape)}"
            )
        x = images.to(device=self.device, dtype=self._compute_dtype)
        return self.image_encoder(x).float()

    def forward(
        self,
        images: torch.Tensor,
        points: tuple[torch.Tensor, torch.Tensor] | None = None,
        boxes: torch.Tensor | None = None,
        masks: torch.Tensor | None = None,
        multimask_output: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Differentiable end to end pass (training): one prompt set per image.

        images (B, 3, S, S) normalised; points (coords (B, N, 2) xy, labels (B, N)); boxes
        (B, 4) xyxy; masks (B, 1, 4h, 4w) logits. Returns low-res mask logits
        (B, 3 | 1, 4h, 4w) and IoU predictions (B, 3 | 1).
        """
        embeddings = self.image_encoder(images)  # (B, 256, h, w)
        sparse, dense = self.prompt_encoder(points, boxes, masks)
        return self.mask_decoder(
            embeddings, self.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output
        )


def build_sam(config: SamConfig | str) -> Sam:
    """A randomly initialised SAM (official initialisation) in eval mode, float32, on CPU."""
    if isinstance(config, str):
        config = get_config(config)
    enc = config.encoder
    if isinstance(enc, ViTEncoderConfig):
        image_encoder: nn.Module = ImageEncoderViT(enc, config.image_size, config.patch_size)
    elif isinstance(enc, TinyViTEncoderConfig):
        if config.patch_size != 16:
            raise ValueError("the TinyViT encoder has a fixed total stride of 16")
        image_encoder = TinyViT(enc, config.image_size)
    else:  # pragma: no cover - the config union is closed
        raise TypeError(f"unknown encoder config {type(enc).__name__}")
    if enc.out_chans != config.prompt_embed_dim:
        raise ValueError("encoder out_chans must equal prompt_embed_dim")
    grid = config.embedding_size
    dim = config.prompt_embed_dim
    prompt_encoder = PromptEncoder(
        embed_dim=dim,
        image_embedding_size=(grid, grid),
        input_image_size=(config.image_size, config.image_size),
        mask_in_chans=16,
    )
    mask_decoder = MaskDecoder(
        transformer_dim=dim,
        transformer=TwoWayTransformer(depth=2, embedding_dim=dim, num_heads=8, mlp_dim=2048),
        num_multimask_outputs=3,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    )
    return Sam(config, image_encoder, prompt_encoder, mask_decoder).eval()
