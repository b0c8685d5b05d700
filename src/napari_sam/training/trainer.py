"""The training loop: AdamW with warm-up and cosine decay, gradient clipping, optional frozen
parts, resumable checkpoints, and export of the weights in the official state-dict format.

One step = one image: encode it once (with gradient unless the encoder is frozen), then run
the prompt rounds of :mod:`napari_sam.training.rounds` on ``objects_per_image`` objects.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch
from torch import nn

from napari_sam.training.augment import AugmentConfig, augment
from napari_sam.training.batch import model_input, object_targets
from napari_sam.training.data import PairSampler, sample_objects
from napari_sam.training.losses import LossTerms
from napari_sam.training.rounds import RoundsConfig, simulate_rounds

Freeze = Literal["none", "image_encoder", "all_but_decoder", "all_but_decoder_heads"]

#: per :data:`Freeze`, the parts (parameter name prefixes) that do not train
FROZEN: dict[Freeze, tuple[str, ...]] = {
    "none": (),
    "image_encoder": ("image_encoder",),
    "all_but_decoder": ("image_encoder", "prompt_encoder"),
    "all_but_decoder_heads": ("image_encoder", "prompt_encoder", "mask_decoder.transformer",
                              "mask_decoder.iou_token", "mask_decoder.mask_tokens"),
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that shapes a training run (saved in its checkpoints).

    ``freeze``: "image_encoder" trains prompt encoder + mask decoder; "all_but_decoder" the
    mask decoder only; "all_but_decoder_heads" the mask decoder's output heads only (its
    upscaling, hypernetworks and IoU head; its two-way transformer and tokens stay).
    ``lr`` peaks after ``warmup_steps`` and decays (cosine) to ``lr * min_lr_ratio`` at
    ``steps``.
    """

    steps: int = 1000
    lr: float = 1e-4
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    objects_per_image: int = 16
    min_object_area: int = 9  # pixels, in the original image
    freeze: Freeze = "none"
    rounds: RoundsConfig = field(default_factory=RoundsConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps <= self.warmup_steps:
            peak = self.lr * self.steps / max(self.warmup_steps, 1)
            warnings.warn(f"the run ({self.steps} steps) ends inside its warm-up "
                          f"({self.warmup_steps} steps): the learning rate never gets above "
                          f"{peak:.2g} of the {self.lr:g} asked for; shorten the warm-up "
                          "(--warmup)", UserWarning, stacklevel=3)  # fmt: skip


@dataclass(frozen=True)
class StepReport:
    """One optimisation step: the loss terms (floats), the learning rate and the wall time."""

    step: int
    loss: float
    focal: float
    dice: float
    iou: float
    lr: float
    seconds: float
    objects: int


def learning_rate(config: TrainConfig, step: int) -> float:
    """The learning rate of ``step`` (0-based): linear warm-up, then cosine decay."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    span = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    floor = config.lr * config.min_lr_ratio
    return floor + (config.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def trainable_parameters(model: nn.Module, freeze: Freeze) -> list[nn.Parameter]:
    """Sets ``requires_grad`` by ``freeze`` (:data:`FROZEN`) and returns the parameters that
    train. With the encoder and the decoder's transformer frozen ("all_but_decoder_heads")
    the transformer runs without a graph unless something upstream of it trains (encoder
    adapters), so a step costs about its forward pass."""
    if freeze not in FROZEN:
        raise ValueError(f"freeze must be one of {get_args(Freeze)}, got {freeze!r}")
    frozen = FROZEN[freeze]
    params = []
    for name, p in model.named_parameters():
        p.requires_grad_(not any(name == f or name.startswith(f + ".") for f in frozen))
        if p.requires_grad:
            params.append(p)
    return params


def export_weights(model: nn.Module, path: str | Path, dtype: torch.dtype = torch.float32) -> Path:
    """Save ``model``'s state dict as a plain ``{key: tensor}`` file (official key format),
    floating tensors cast to ``dtype`` (float16 halves the file; loading casts back).
    Written to a temporary file first, then renamed, so readers never see half a file."""
    state = {
        k: (v.detach().to("cpu", dtype) if v.is_floating_point() else v.detach().cpu()).clone()
        for k, v in model.state_dict().items()
    }
    return save_state(path, state)


def read_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict:
    """The state saved by :meth:`Trainer.save_checkpoint` (tensors only: never a pickle).
    Raises ``ValueError`` naming the file and torch's reason, without torch's advice to
    unpickle it, when it cannot be read."""
    from napari_sam.model.checkpoints import torch_error_reason

    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # torch raises pickle, runtime and zip errors alike
        raise ValueError(f"{path} is not a readable training checkpoint "
                         f"({torch_error_reason(exc)}); delete it (or choose another "
                         "--run-dir) to start afresh") from None  # fmt: skip


def save_state(path: str | Path, state: dict) -> Path:
    """Write a checkpoint ``state`` (tensors, numbers, strings) to ``path``: to a temporary
    file first, then renamed, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


class Trainer:
    """Trains ``model`` (a SAM with ``config``, ``image_encoder``, ``prompt_encoder`` and
    ``mask_decoder``) on pairs from ``sampler``."""

    def __init__(
        self, model: nn.Module, config: TrainConfig, sampler: PairSampler,
        device: torch.device | str = "cpu",
    ) -> None:
        self.model = model.to(device).train()
        self.config = config
        self.sampler = sampler
        self.device = torch.device(device)
        self.params = trainable_parameters(model, config.freeze)
        self.optimizer = torch.optim.AdamW(
            self.params, lr=config.lr, weight_decay=config.weight_decay
        )
        self.step = 0

    def _draw(self, rng: np.random.Generator, step: int):
        """The augmented pair of ``step`` and its object targets (at least one object)."""
        sam_config = self.model.config
        for _ in range(50):
            pair = augment(self.sampler(rng, step), rng, self.config.augment)
            ids = sample_objects(
                pair.labels, self.config.objects_per_image, rng, self.config.min_object_area
            )
            if len(ids) == 0:
                continue
            carried = self.config.rounds.carried_prob > 0 and pair.previous is not None
            targets = object_targets(pair.labels, ids, sam_config, self.device,
                                     neighbours=self.config.rounds.neighbour_negative_prob > 0,
                                     previous=pair.previous if carried else None)  # fmt: skip
            visible = targets.low_res.amax((1, 2, 3)) > 0.5  # too small for the decoder grid
            if visible.any():
                return model_input(pair.image, sam_config, self.device), targets.select(visible)
        raise ValueError("50 draws gave no image with an object big enough to train on")

    def _loss(self, step: int) -> tuple[LossTerms, int]:
        """The loss terms of ``step``'s image and prompts (all drawn from the seed and
        ``step``), and the number of objects; autograd as the caller enables it."""
        rng = np.random.default_rng([self.config.seed, step])
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        inputs, targets = self._draw(rng, step)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.config.freeze == "none"):
            embedding = self.model.image_encoder(inputs.image)
        terms = simulate_rounds(self.model, embedding, targets, self.config.rounds, generator)
        return terms, len(targets.full)

    @torch.no_grad()
    def batch_loss(self, step: int) -> LossTerms:
        """The loss the model has now on the batch of ``step`` (no update; for checks).
        Deterministic for a deterministic sampler."""
        return self._loss(step)[0]

    def train_step(self) -> StepReport:
        """One optimisation step on one image."""
        start = time.perf_counter()
        lr = learning_rate(self.config, self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        terms, objects = self._loss(self.step)
        self.optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        if self.config.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.params, self.config.grad_clip)
        self.optimizer.step()
        self.step += 1
        return StepReport(
            self.step, terms.total.item(), terms.focal.item(), terms.dice.item(),
            terms.iou.item(), lr, time.perf_counter() - start, objects,
        )

    def run(self, until: int | None = None) -> Iterator[StepReport]:
        """Train up to step ``until`` (default ``config.steps``), yielding every step."""
        until = self.config.steps if until is None else until
        while self.step < until:
            yield self.train_step()

    def save_checkpoint(self, path: str | Path) -> Path:
        """A resumable checkpoint: weights, optimizer state, step and the configuration."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return save_state(path, {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "architecture": self.model.config.name,
            "train_config": repr(asdict(self.config)),
        })  # fmt: skip

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore weights, optimizer state and step from :meth:`save_checkpoint`'s file."""
        state = read_checkpoint(path, self.device)
        if state["architecture"] != self.model.config.name:
            raise ValueError(
                f"checkpoint {path} is for {state['architecture']!r}, "
                f"not {self.model.config.name!r}"
            )
        self.model.load_state_dict(state["model"], strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
