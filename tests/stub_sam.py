"""A stand-in for SAM whose masks are predictable and cost microseconds (tests only).

:func:`disc_predictor` is a real :class:`napari_sam.predictor.Predictor` (validation,
preprocessing, transforms, upsampling, label writes and the widget run unchanged) around
:class:`DiscSam`, with only the decoder step (``Predictor._decode``: prompts of one kind to
low-res logits and scores) replaced by the disc decoder below, converting prompts with the
same public transforms. Its
"mask" of a prompt: discs of ``radius`` model-input pixels around the positive points, the
box filled, the dense mask prompt added, discs around negative points removed. Like the
real model, a non-finite coordinate reaching it gives NaN logits and NaN scores (so a test
sees it). ``delay`` seconds per encode, spread over ``steps`` modules, each preceded by a
job cancel check (:func:`napari_sam.jobs.checkpoint`, as the real encoders' blocks): a
cancelled job stops it half way.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from napari_sam.jobs import checkpoint
from napari_sam.model.config import SamConfig, ViTEncoderConfig
from napari_sam.predictor import Predictor
from napari_sam.transforms import Geometry, boxes_to_model, mask_to_logits, points_to_model

FEATURES = 256  # channels of the image embedding (as SAM; stores expect 256)


def stub_config(image_size: int = 64) -> SamConfig:
    return SamConfig(
        "disc_stub",
        ViTEncoderConfig(embed_dim=8, depth=1, num_heads=1, global_attn_indexes=(0,)),
        image_size=image_size,
    )


class _Sleep(nn.Module):
    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.seconds:
            time.sleep(self.seconds)
        return x


class _PoolEncoder(nn.Module):
    """(B, 3, S, S) -> (B, FEATURES, S/16, S/16): block means, channel c scaled by c + 1."""

    def __init__(self, delay: float, steps: int) -> None:
        super().__init__()
        self.steps = nn.Sequential(*[_Sleep(delay / steps) for _ in range(steps)])
        self.scale = nn.Parameter(torch.arange(1, FEATURES + 1, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for step in self.steps:
            checkpoint()
            x = step(x)
        pooled = nn.functional.avg_pool2d(x.mean(1, keepdim=True), 16)
        return pooled * self.scale.view(1, -1, 1, 1)


class _PromptEncoder(nn.Module):
    """Keeps the prompts as they are: sparse (B, T, 3) rows ``(x, y, kind)`` with kind 1
    positive, 0 negative, 2 / 3 box corners; dense: the mask logits (B, 1, L, L) or None."""

    def __init__(self, grid: int) -> None:
        super().__init__()
        self.grid = grid

    def get_dense_pe(self) -> torch.Tensor:
        return torch.zeros(1, FEATURES, self.grid, self.grid)

    def forward(self, points, boxes, masks):
        rows = []
        if points is not None:
            coords, labels = points
            rows.append(torch.cat((coords, labels[..., None].to(coords.dtype)), -1))
        if boxes is not None:
            corners = boxes.reshape(-1, 2, 2)
            kinds = torch.tensor([2.0, 3.0]).expand(len(boxes), 2)[..., None]
            rows.append(torch.cat((corners, kinds), -1))
        b = len(rows[0]) if rows else len(masks)
        sparse = torch.cat(rows, 1) if rows else torch.zeros(b, 0, 3)
        return sparse, masks


class _DiscDecoder(nn.Module):
    def __init__(self, image_size: int, low_res: int, radius: float) -> None:
        super().__init__()
        self.image_size, self.low_res, self.radius = image_size, low_res, radius

    def forward(
        self,
        image_embeddings,
        image_pe,
        sparse_prompt_embeddings,
        dense_prompt_embeddings,
        multimask_output,
    ):
        sparse, dense = sparse_prompt_embeddings, dense_prompt_embeddings
        n, L = len(sparse), self.low_res
        centre = (torch.arange(L, dtype=torch.float32) + 0.5) * (self.image_size / L)
        y, x = centre[:, None], centre[None, :]
        out = torch.empty(n, 3, L, L)
        iou = torch.tensor([[0.9, 0.5, 0.3]]).repeat(n, 1)
        for b in range(n):
            if not torch.isfinite(sparse[b]).all():
                out[b], iou[b] = float("nan"), float("nan")
                continue
            for k in range(3):
                r2 = (self.radius * (k + 1)) ** 2
                inside = torch.zeros(L, L, dtype=torch.bool)
                if dense is not None:
                    inside |= dense[b, 0] > 0
                corners = sparse[b][sparse[b, :, 2] >= 2]
                if len(corners) == 2:
                    (x0, y0), (x1, y1) = corners[0, :2], corners[1, :2]
                    inside |= (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
                pts = sparse[b][sparse[b, :, 2] < 2]
                discs = (x - pts[:, 0, None, None]) ** 2 + (y - pts[:, 1, None, None]) ** 2 <= r2
                positive = pts[:, 2] == 1
                inside |= discs[positive].any(0)
                inside &= ~discs[~positive].any(0)
                out[b, k] = torch.where(inside, 8.0, -8.0)
        # SAM's outputs: the single-mask output (the first disc), then the three; None: all
        if multimask_output is None:
            return torch.cat((out[:, :1], out), 1), torch.cat((iou[:, :1], iou), 1)
        return (out, iou) if multimask_output else (out[:, :1], iou[:, :1])


class DiscSam(nn.Module):
    """See the module docstring. ``image_size`` S: model input side (multiple of 16)."""

    def __init__(
        self, image_size: int = 64, radius: float = 3.0, delay: float = 0.0, steps: int = 8
    ) -> None:
        super().__init__()
        self.config = stub_config(image_size)
        self.image_encoder = _PoolEncoder(delay, steps)
        self.prompt_encoder = _PromptEncoder(self.config.embedding_size)
        self.mask_decoder = _DiscDecoder(image_size, self.config.low_res_mask_size, radius)
        self.encode_calls = 0

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        self.encode_calls += 1
        return self.image_encoder(images.to(self.image_encoder.scale.device))


class DiscPredictor(Predictor):
    """The real predictor with the disc decoder in place of SAM's decode step."""

    def _decode(self, *args):
        # (embedding, prompts[, multimask]) now; (features, image_pe, prompts, geometry) before
        prompts = next(a for a in args if isinstance(a, list))
        multimask = args[2] if len(args) == 3 and not isinstance(args[2], list) else None
        geometry = next(a if isinstance(a, Geometry) else a.geometry
                        for a in args if isinstance(a, Geometry) or hasattr(a, "geometry"))  # fmt: skip
        points = boxes = masks = None
        if len(prompts[0].points):
            coords = points_to_model(np.stack([p.points for p in prompts]), geometry)
            points = (coords, torch.from_numpy(np.stack([p.labels for p in prompts])))
        if prompts[0].box is not None:
            boxes = boxes_to_model(np.stack([p.box for p in prompts]), geometry)
        if prompts[0].mask is not None or prompts[0].mask_logits is not None:
            masks = torch.stack([
                mask_to_logits(p.mask, geometry) if p.mask is not None
                else torch.from_numpy(p.mask_logits)[None] for p in prompts
            ])  # fmt: skip
        sparse, dense = self.model.prompt_encoder(points, boxes, masks)
        return self.model.mask_decoder(None, None, sparse, dense, multimask)


def disc_predictor(**kwargs) -> Predictor:
    """A predictor around a new :class:`DiscSam` (keyword arguments go to it)."""
    return DiscPredictor(DiscSam(**kwargs), weights_id="disc")


class OnAcceleratorPredictor(DiscPredictor):
    """Reports a CUDA device until an out-of-memory fallback moved it to the CPU (to
    simulate an accelerator on a machine without one; the model itself stays on the CPU).
    """

    @property
    def device(self) -> torch.device:
        return torch.device("cpu" if self.fallback_note else "cuda")


def fail_first_encodes(model: DiscSam, error: BaseException, times: int = 1) -> DiscSam:
    """Make ``model.encode`` raise ``error`` on its first ``times`` calls."""
    encode, left = model.encode, [times]

    def failing(images):
        if left[0] > 0:
            left[0] -= 1
            raise error
        return encode(images)

    model.encode = failing
    return model
