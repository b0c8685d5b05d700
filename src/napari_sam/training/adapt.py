"""Adapt the model to the user's objects: a short finetune on the objects committed so far.

The trainer's interactive rounds (:func:`~napari_sam.training.rounds.simulate_rounds`) run on
the committed objects, within a time budget, on a copy of the model: the predictor in use is
never touched, so cancelling (or going back) leaves the base model exactly as it was.

Each step draws ``objects_per_step`` committed objects. Each is seen in a window as the
plugin's prompting path sees it (:func:`~napari_sam.plane_segmentation.segment_plane`): by
default the magnified window the zoom decodes small objects in, with a random size and
offset (``zoom_share`` below 1: its tile for the rest), under a random flip or rotation.
The window is embedded, the object's prompt rounds are decoded, and the loss is the
trainer's. Only the committed objects are targets: nothing is learned about pixels the user
has not labelled.

``target`` says what learns: ``"decoder"`` the mask decoder (the image embeddings stay
valid: the signature is the base model's), ``"decoder+encoder"`` the mask decoder and
low-rank adapters on the image encoder's attention (:mod:`napari_sam.model.lora`), merged
into its weights at the end; the encoder then differs, and so does the embedding signature.
``decoder_part`` says which of the mask decoder: ``"heads"`` (the default) its upscaling,
hypernetworks and IoU head, the two-way transformer frozen; ``"all"`` the whole decoder.
``decoder_part`` applies to both targets. With the bundled model, target ``"decoder"`` and
60 s, heads alone ran about 1.5x the steps, gained a little more on clicks on nuclei from
elsewhere, less on ours, and held the box figures, which the whole decoder lowered on ours
(docs/training.md).
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, TypeVar, get_args

import numpy as np
import torch
from torch import nn

from napari_sam.jobs import checkpoint
from napari_sam.model.checkpoints import SETTINGS_KEY
from napari_sam.predictor import Predictor
from napari_sam.tile_grid import Box, default_grid
from napari_sam.training.candidate_choice import FittedChoice, fit_candidate_choice
from napari_sam.training.rounds import RoundsConfig

AdaptTarget = Literal["decoder", "decoder+encoder"]
DecoderPart = Literal["all", "heads"]
T = TypeVar("T")


@dataclass(frozen=True)
class AdaptSettings:
    """One adaptation run (``target`` and ``decoder_part``: see the module's docstring).

    ``budget_s``: wall time of the training loop (the default suits the bundled model on 2
    CPU cores; give larger models more); ``max_steps``: stop earlier after this many steps
    (None: the budget alone). ``zoom_share``: the share of windows that are an object's zoom
    window (the rest: its tile; 1, every window a zoom window, gained more on clicks than 0.7,
    docs/training.md); ``context``: the zoom window's side over the object's, drawn
    uniformly in this range. ``min_area``: committed objects smaller than this (pixels) are
    not trained on. ``fit_choice``: after training, choose which of SAM's masks each prompt
    family gets from how they fit the committed objects
    (:mod:`~napari_sam.training.candidate_choice`), in the ``choice_share`` of the budget kept
    for it. ``pick_weight``: each trained object also gets a single click whose four masks
    the IoU head must rank by their true IoU (a pairwise ranking loss of that weight): a
    click's mask is picked among the four by predicted IoU, and the rounds' loss alone does
    not teach that order (0: off; 1, the default, gained 0.01 on clicks, docs/training.md).
    """

    budget_s: float = 60.0
    max_steps: int | None = None
    target: AdaptTarget = "decoder"
    decoder_part: DecoderPart = "heads"
    lora_rank: int = 4
    lr: float = 3e-4
    warmup_steps: int = 3
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    objects_per_step: int = 4
    zoom_share: float = 1.0
    context: tuple[float, float] = (3.0, 5.0)
    min_side: int = 96
    min_area: int = 16
    rounds: RoundsConfig = field(default_factory=lambda: RoundsConfig(
        corrective=2, refine=0, box_prob=0.5, centre_prob=0.5, random_depth=True,
        loss_rounds="first_last"))  # fmt: skip
    fit_choice: bool = True
    choice_share: float = 0.15
    pick_weight: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.target not in get_args(AdaptTarget):
            raise ValueError(f"target must be one of {get_args(AdaptTarget)}, got {self.target!r}")
        if self.decoder_part not in get_args(DecoderPart):
            raise ValueError(f"decoder_part must be one of {get_args(DecoderPart)}, "
                             f"got {self.decoder_part!r}")  # fmt: skip
        if not self.budget_s > 0:
            raise ValueError(f"the time budget must be positive, got {self.budget_s}")
        if self.objects_per_step < 1 or self.lora_rank < 1:
            raise ValueError("objects_per_step and lora_rank are at least 1")
        if not 0 <= self.choice_share < 1:
            raise ValueError(f"choice_share is in [0, 1), got {self.choice_share}")
        if not self.pick_weight >= 0:
            raise ValueError(f"pick_weight is at least 0, got {self.pick_weight}")


@dataclass(frozen=True)
class CommittedPlane:
    """One plane and the objects committed on it.

    ``image``: (H, W) one channel, or (H, W, 3 | 4) when ``rgb``; ``labels``: (H, W) int, one
    id per committed object, 0 elsewhere; ``contrast_limits``: as the image is shown (None:
    percentiles, see :func:`~napari_sam.image.to_model_image`).
    """

    image: np.ndarray
    labels: np.ndarray
    contrast_limits: tuple[float, float] | None = None
    rgb: bool = False

    def __post_init__(self) -> None:
        if self.labels.ndim != 2 or tuple(self.image.shape[:2]) != self.labels.shape:
            raise ValueError(f"labels {self.labels.shape} do not match the image plane "
                             f"{self.image.shape}")  # fmt: skip


@dataclass(frozen=True)
class AdaptReport:
    """What a run did: optimisation ``steps`` in ``seconds`` on ``objects`` committed
    objects; the mean loss of the first and of the last fifth of the steps; what learned
    (``target``, ``decoder_part``); the mask choice fitted to the objects (None: not
    fitted)."""

    steps: int
    seconds: float
    objects: int
    first_loss: float
    last_loss: float
    target: AdaptTarget
    choice: FittedChoice | None = None
    decoder_part: DecoderPart = "heads"


@dataclass(frozen=True)
class Adapted:
    """The adapted predictor beside the base one it came from."""

    base: Predictor
    predictor: Predictor
    report: AdaptReport

    @property
    def encoder_changed(self) -> bool:
        """True when the image encoder learned (its embeddings differ from the base's)."""
        return self.report.target != "decoder"

    def save(self, path: str | Path) -> Path:
        """Write the adapted weights to ``path``: a plain file of tensors that loads like any
        other (``Predictor.load(path)``, ``--model path``, the widget's file choice): micro-sam's
        layout (``model_state``, and ``decoder_state`` with an instance decoder, so automatic
        segmentation keeps working from the one file), with the fitted mask choice under
        ``SETTINGS_KEY`` (strings only)."""
        from napari_sam.training.trainer import save_state

        state = {"model_state": _plain(self.predictor.model.state_dict()),
                 SETTINGS_KEY: {"auto_multimask": [list(p) for p in
                                                   self.predictor.config.auto_multimask]}}  # fmt: skip
        decoder = self.predictor.instance_decoder
        if decoder is not None:
            state["decoder_state"] = _plain(decoder.state_dict())
        return save_state(path, state)


def _plain(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU float32 copies (integer tensors as they are)."""
    return {k: (v.detach().to("cpu", torch.float32) if v.is_floating_point() else
                v.detach().cpu()).clone() for k, v in state.items()}  # fmt: skip


def committed_objects(planes: Sequence[CommittedPlane], min_area: int) -> list[tuple[int, int]]:
    """``(plane, id)`` of every committed object of at least ``min_area`` pixels."""
    found = []
    for p, plane in enumerate(planes):
        ids, counts = np.unique(plane.labels[plane.labels != 0], return_counts=True)
        found += [(p, int(i)) for i, c in zip(ids, counts) if c >= min_area]
    return found


def adapt(predictor: Predictor, planes: Sequence[CommittedPlane],
          settings: AdaptSettings | None = None) -> Adapted:  # fmt: skip
    """:func:`adapt_steps` run to its end (scripts, the CLI)."""
    from napari_sam.jobs import drain

    return drain(adapt_steps(predictor, planes, settings))


def adapt_steps(
    predictor: Predictor, planes: Sequence[CommittedPlane], settings: AdaptSettings | None = None
) -> Generator[tuple[int, int], None, Adapted]:
    """Finetune a copy of ``predictor``'s model on the committed objects of ``planes``,
    yielding ``(seconds done, seconds budget)`` after each step; returns the
    :class:`Adapted` predictor. Stops at a :func:`~napari_sam.jobs.checkpoint` when the job
    is cancelled (``Cancelled``), leaving ``predictor`` as it was. Raises ``ValueError`` when
    there is no committed object of ``settings.min_area`` pixels."""
    from napari_sam.model.lora import add_lora, merge_lora
    from napari_sam.training.trainer import trainable_parameters

    settings = settings or AdaptSettings()
    objects = committed_objects(planes, settings.min_area)
    if not objects:
        raise ValueError(f"adapting needs committed objects of at least {settings.min_area} "
                         "pixels; commit some objects first")  # fmt: skip
    base_dtype = predictor.model.compute_dtype
    model = copy.deepcopy(predictor.model).set_compute_dtype(torch.float32).train()
    freeze = "all_but_decoder_heads" if settings.decoder_part == "heads" else "all_but_decoder"
    params = trainable_parameters(model, freeze)
    if settings.target == "decoder+encoder":
        params += add_lora(model.image_encoder, settings.lora_rank)
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    rng = np.random.default_rng(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    order: list[int] = []
    losses: list[float] = []
    start = time.perf_counter()
    budget = settings.budget_s
    train_budget = budget * (1 - settings.choice_share) if settings.fit_choice else budget
    step = 0
    while True:
        elapsed = time.perf_counter() - start
        if elapsed >= train_budget or (settings.max_steps is not None and step >= settings.max_steps):
            break
        checkpoint()
        progress = elapsed / train_budget
        if settings.max_steps is not None:
            progress = max(progress, step / settings.max_steps)
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(settings, step, progress)
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for _ in range(settings.objects_per_step):
            if not order:
                order = list(rng.permutation(len(objects)))
            plane_index, label = objects[order.pop()]
            loss = _object_loss(model, planes[plane_index], label, settings, rng, generator)
            (loss / settings.objects_per_step).backward()
            total += loss.item() / settings.objects_per_step
        if settings.grad_clip > 0:
            nn.utils.clip_grad_norm_(params, settings.grad_clip)
        optimizer.step()
        losses.append(total)
        step += 1
        yield int(min(time.perf_counter() - start, budget)), math.ceil(budget)
    merge_lora(model.image_encoder)
    model.eval().set_compute_dtype(base_dtype)
    for p in model.parameters():
        p.requires_grad_(False)
    weights_id = predictor.weights_id
    if settings.target != "decoder":
        weights_id += "+adapted:" + _encoder_digest(model.image_encoder)
    adapted = Predictor(model, weights_id=weights_id, max_batch=predictor.max_batch,
                        instance_decoder=predictor.instance_decoder)  # fmt: skip
    choice = None
    if settings.fit_choice:
        fitting = fit_candidate_choice(adapted, planes, _spread(objects, 12), seed=settings.seed)
        choice = yield from _in_seconds(fitting, start, budget)
        model.config = replace(model.config, auto_multimask=choice.modes)
        adapted = Predictor(model, weights_id=weights_id, max_batch=predictor.max_batch,
                            instance_decoder=predictor.instance_decoder)  # fmt: skip
    adapted.warn_on_fallback = predictor.warn_on_fallback
    checkpoint()  # a cancel during the merge or the fit still leaves the model in use
    fifth = max(1, len(losses) // 5)
    report = AdaptReport(step, time.perf_counter() - start, len(objects),
                         float(np.mean(losses[:fifth])) if losses else float("nan"),
                         float(np.mean(losses[-fifth:])) if losses else float("nan"),
                         settings.target, choice, settings.decoder_part)  # fmt: skip
    return Adapted(predictor, adapted, report)


def _in_seconds(steps: Generator[tuple[int, int], None, T], start: float,
                budget: float) -> Generator[tuple[int, int], None, T]:  # fmt: skip
    """``steps``' value, yielding ``(seconds since start, seconds budget)`` at each step."""
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value
        yield int(min(time.perf_counter() - start, budget)), math.ceil(budget)


def _spread(objects: list[tuple[int, int]], count: int) -> list[tuple[int, int]]:
    """At most ``count`` of ``objects``, evenly spread over the list."""
    if len(objects) <= count:
        return objects
    return [objects[i] for i in np.linspace(0, len(objects) - 1, count).round().astype(int)]


def _learning_rate(settings: AdaptSettings, step: int, progress: float) -> float:
    """Linear warm-up over the first steps, then cosine decay over the run's progress."""
    if step < settings.warmup_steps:
        return settings.lr * (step + 1) / settings.warmup_steps
    return settings.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def _encoder_digest(encoder: nn.Module) -> str:
    """A short hash of the encoder's weights (identifies adapted embeddings)."""
    digest = hashlib.sha1()
    for name, tensor in encoder.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).numpy().tobytes())
    return digest.hexdigest()[:16]


def _object_loss(model, plane: CommittedPlane, label: int, settings: AdaptSettings,
                 rng: np.random.Generator, generator: torch.Generator) -> torch.Tensor:  # fmt: skip
    """The rounds' loss of committed object ``label`` of ``plane`` (and of the other committed
    objects whole inside its window), in a random window under a random flip / rotation."""
    from napari_sam.image import to_model_image
    from napari_sam.training.batch import object_targets
    from napari_sam.training.rounds import simulate_rounds
    from napari_sam.transforms import preprocess

    mask = plane.labels == label
    rows, cols = np.nonzero(mask)
    bbox = (int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1)
    window = _window(bbox, plane.labels.shape, model.config.image_size, settings, rng)
    r0, c0, r1, c1 = window
    crop = plane.labels[r0:r1, c0:c1]
    ids = _whole_inside(crop, window, plane.labels.shape, label)
    crop = np.where(np.isin(crop, ids), crop, 0).astype(np.int64)
    image = to_model_image(plane.image[r0:r1, c0:c1], rgb=plane.rgb,
                           contrast_limits=None if plane.rgb else plane.contrast_limits)  # fmt: skip
    k = int(rng.integers(8))
    image, crop = _dihedral(image, k), _dihedral(crop, k)
    batch, _ = preprocess(np.ascontiguousarray(image), model.config)
    encoder_learns = any(p.requires_grad for p in model.image_encoder.parameters())
    with torch.set_grad_enabled(encoder_learns):
        embedding = model.image_encoder(batch.to(model.device))
    targets = object_targets(np.ascontiguousarray(crop), np.asarray(ids, np.int64),
                             model.config, model.device)  # fmt: skip
    visible = targets.low_res.amax((1, 2, 3)) > 0.5
    if not visible.any():  # too small for the decoder grid: train on the object alone
        visible[0] = True
    targets = targets.select(visible)
    loss = simulate_rounds(model, embedding, targets, settings.rounds, generator).total
    if settings.pick_weight > 0:
        loss = loss + settings.pick_weight * _pick_loss(model, embedding, targets, generator)
    return loss


def _pick_loss(model, embedding: torch.Tensor, targets, generator: torch.Generator) -> torch.Tensor:
    """The order of the predicted IoUs of all four of SAM's masks for a single click on each
    target (at its deepest low-res cell or anywhere inside, half and half): the pairwise
    ranking loss of the IoU head, since a click's mask is picked among the four by it."""
    from napari_sam.training.calibrate import ranking_loss
    from napari_sam.training.losses import mask_iou
    from napari_sam.training.prompting import first_points

    inside = targets.low_res[:, 0] > 0.5
    if not inside.flatten(1).any(1).all():
        return embedding.sum() * 0.0
    points = first_points(inside, generator, targets.stride, centre_prob=0.5)
    sparse, dense = model.prompt_encoder(points=(points.coords, points.labels), boxes=None,
                                         masks=None)  # fmt: skip
    logits, iou_pred = model.mask_decoder.predict_masks(
        embedding, model.prompt_encoder.get_dense_pe(), sparse, dense)  # fmt: skip
    return ranking_loss(iou_pred, mask_iou(logits.detach(), targets.low_res))


def _window(bbox: Box, shape: tuple[int, int], image_size: int, settings: AdaptSettings,
            rng: np.random.Generator) -> Box:  # fmt: skip
    """A window of the plane ``shape`` holding ``bbox``: the object's tile (as the grid
    routes it), or a square zoom window ``context`` times the object's size, shifted at
    random (the object stays inside)."""
    r0, c0, r1, c1 = bbox
    if rng.random() >= settings.zoom_share:
        grid = default_grid(shape, image_size)
        return grid[grid.route(np.array([[r0, c0], [r1 - 1, c1 - 1]]))].window
    lo, hi = settings.context
    side = max(rng.uniform(lo, hi) * max(r1 - r0, c1 - c0), settings.min_side)
    side = int(min(side, *shape))
    top = _start(r0, r1, side, shape[0], rng)
    left = _start(c0, c1, side, shape[1], rng)
    return (top, left, top + side, left + side)


def _start(lo: int, hi: int, side: int, length: int, rng: np.random.Generator) -> int:
    """The first index of a ``side`` window over ``[0, length)`` near the centre of
    ``[lo, hi)``, shifted by up to a tenth of ``side`` but holding it whole when it fits."""
    centre = (lo + hi - side) / 2 + rng.uniform(-0.1, 0.1) * side
    if hi - lo <= side:
        centre = min(max(centre, hi - side), lo)
    return int(min(max(round(centre), 0), length - side))


def _whole_inside(crop: np.ndarray, window: Box, shape: tuple[int, int], label: int,
                  max_targets: int = 8) -> list[int]:  # fmt: skip
    """``label`` first, then (up to ``max_targets`` in all) the other objects of ``crop`` that
    do not touch the window's edges inside the plane (cut objects would teach wrong
    outlines)."""
    r0, c0, r1, c1 = window
    edges = []
    if r0 > 0:
        edges.append(crop[0])
    if c0 > 0:
        edges.append(crop[:, 0])
    if r1 < shape[0]:
        edges.append(crop[-1])
    if c1 < shape[1]:
        edges.append(crop[:, -1])
    cut = set(np.unique(np.concatenate(edges)).tolist()) if edges else set()
    others = [int(i) for i in np.unique(crop) if i not in (0, label) and int(i) not in cut]
    return [label, *others[: max_targets - 1]]


def _dihedral(array: np.ndarray, k: int) -> np.ndarray:
    """``array`` (H, W, ...) rotated by ``k % 4`` quarter turns, then mirrored when k >= 4."""
    out = np.rot90(array, k % 4, axes=(0, 1))
    return out[:, ::-1] if k >= 4 else out
