"""Training an instance decoder (AIS) on a frozen SAM image encoder.

One step = ``batch`` images: each is augmented, resized and padded as the predictor does
(:func:`~napari_sam.training.batch.model_input`), encoded without gradient, and cut to a
random window of ``crop`` x ``crop`` embedding cells (its pixels in the decoder's output:
``crop * 16`` per side for a patch-16 encoder). The decoder predicts foreground, centre and
boundary distances there; the loss is micro-sam's (:func:`~napari_sam.training.losses.
distance_loss`) against :func:`~napari_sam.training.distance_targets.distance_targets` of the
labels in the same frame. The SAM model is never changed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from napari_sam.model.instance_decoder import InstanceDecoder
from napari_sam.training.augment import AugmentConfig, augment
from napari_sam.training.batch import model_input, padded_labels
from napari_sam.training.data import PairSampler
from napari_sam.training.distance_targets import distance_targets
from napari_sam.training.losses import distance_loss
from napari_sam.training.trainer import (
    TrainConfig,
    learning_rate,
    read_checkpoint,
    save_state,
)


@dataclass(frozen=True)
class DecoderTrainConfig:
    """Everything that shapes a decoder training run (saved in its checkpoints).

    ``crop``: embedding cells per side of a training window (0: the whole padded input);
    ``lr`` peaks after ``warmup_steps`` and decays (cosine) to ``lr * min_lr_ratio``.
    """

    steps: int = 1500
    batch: int = 4
    crop: int = 16
    lr: float = 1e-3
    warmup_steps: int = 50
    min_lr_ratio: float = 0.05
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    seed: int = 0

    def schedule(self) -> TrainConfig:
        """The SAM trainer's configuration with this schedule (for :func:`learning_rate`)."""
        return TrainConfig(steps=self.steps, lr=self.lr, warmup_steps=self.warmup_steps,
                           min_lr_ratio=self.min_lr_ratio)  # fmt: skip


@dataclass(frozen=True)
class DecoderStepReport:
    """One optimisation step: the loss, the learning rate, the wall time in seconds."""

    step: int
    loss: float
    lr: float
    seconds: float


class DecoderTrainer:
    """Trains ``decoder`` (an :class:`InstanceDecoder`) on ``model``'s frozen image encoder
    with pairs from ``sampler``."""

    def __init__(
        self, model: nn.Module, decoder: InstanceDecoder, config: DecoderTrainConfig,
        sampler: PairSampler, device: torch.device | str = "cpu",
    ) -> None:  # fmt: skip
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.decoder = decoder.to(self.device).train()
        self.config = config
        self.sampler = sampler
        self.optimizer = torch.optim.AdamW(
            self.decoder.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        self.step = 0

    def _example(self, rng: np.random.Generator, step: int
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
        """One window: its embedding (1, C, c, c), model input (1, 3, c * p, c * p) and
        targets (1, 3, c * p, c * p)."""
        sam_config = self.model.config
        size, patch = sam_config.image_size, sam_config.patch_size
        pair = augment(self.sampler(rng, step), rng, self.config.augment)
        inputs = model_input(pair.image, sam_config, self.device)
        with torch.no_grad():
            embedding = self.model.image_encoder(inputs.image)  # (1, C, g, g)
        target = torch.as_tensor(distance_targets(padded_labels(pair.labels, size).numpy()))[None]
        crop = self.config.crop
        grid = embedding.shape[-1]
        if crop <= 0 or crop >= grid:
            return embedding, inputs.image, target.to(self.device)
        # a window inside the image where it can be, else from the top left
        cells = [-(-s // patch) for s in inputs.resized]  # image cells per axis
        r0, c0 = (int(rng.integers(max(1, n - crop + 1))) for n in cells)
        window = embedding[..., r0 : r0 + crop, c0 : c0 + crop]
        rows, cols = slice(r0 * patch, (r0 + crop) * patch), slice(c0 * patch, (c0 + crop) * patch)
        image = inputs.image[..., rows, cols]
        return window, image, target[..., rows, cols].to(self.device)

    def batch_loss(self, step: int) -> torch.Tensor:
        """The loss of ``step``'s batch (all drawn from the seed and ``step``); autograd as
        the caller enables it."""
        rng = np.random.default_rng([self.config.seed, step])
        windows, images, targets = zip(*(self._example(rng, step)
                                         for _ in range(self.config.batch)))  # fmt: skip
        image = torch.cat(images) if self.decoder.config.image_skip else None
        maps = self.decoder.decode_padded(torch.cat(windows), image)  # (B, 3, h, w)
        return distance_loss(maps, torch.cat(targets))

    def train_step(self) -> DecoderStepReport:
        """One optimisation step on one batch."""
        start = time.perf_counter()
        lr = learning_rate(self.config.schedule(), self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.decoder.train()
        loss = self.batch_loss(self.step)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.decoder.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.step += 1
        return DecoderStepReport(self.step, loss.item(), lr, time.perf_counter() - start)

    def run(self, until: int | None = None) -> Iterator[DecoderStepReport]:
        """Train up to step ``until`` (default ``config.steps``), yielding every step."""
        until = self.config.steps if until is None else until
        while self.step < until:
            yield self.train_step()
        self.decoder.eval()

    def save_checkpoint(self, path: str | Path) -> Path:
        """A resumable checkpoint: decoder weights, optimizer state, step, configuration."""
        return save_state(path, {
            "decoder": self.decoder.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "architecture": self.model.config.name,
            "initial_features": self.decoder.config.initial_features,
            "train_config": repr(asdict(self.config)),
        })  # fmt: skip

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore weights, optimizer state and step from :meth:`save_checkpoint`'s file."""
        state = read_checkpoint(path, self.device)
        if state.get("architecture") != self.model.config.name or "decoder" not in state:
            raise ValueError(f"checkpoint {path} is not a decoder run on "
                             f"{self.model.config.name!r}")  # fmt: skip
        self.decoder.load_state_dict(state["decoder"], strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
