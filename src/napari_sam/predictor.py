"""Embed once, decode many: the interactive core of napari-sam.

``Predictor.embed(image)`` runs the image encoder once and returns an
:class:`ImageEmbedding`; ``Predictor.predict(embedding, prompts)`` decodes as often as the
user clicks. Every decode produces SAM's four candidate masks per object: the single-mask
output and three ambiguity-aware masks. Which one a prompt gets is the ``multimask`` choice
(:data:`Multimask`): ``"best"`` takes the best of the three by predicted IoU, ``"single"`` the
single-mask output, ``"any"`` the best of all four, ``"auto"`` decides per prompt family
(:func:`prompt_family`) as the model's configuration says (``SamConfig.auto_multimask``; for
the bundled model chosen by measurement on nuclei we did not make and on ours:
docs/prompting.md). Only the chosen mask is upsampled to the image's resolution. Prompts of
one kind (same number of points, box or not, dense mask or not) decode as one batch.
"""

from __future__ import annotations

import hashlib
import warnings
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from napari_sam.image import Channel, to_model_image
from napari_sam.model.fast_decode import ImageState, decode, prepare_image
from napari_sam.prompts import PointLabel, Prompt
from napari_sam.transforms import (
    Geometry,
    ObjectMask,
    boxes_to_model,
    mask_to_logits,
    points_to_model,
    preprocess,
    upsample_mask,
)

TRANSFORM_VERSION = "resize-longest-antialias/pad-br/v1"
# Image states (per-embedding decoder tensors, ~14 MB each for vit_b) kept per predictor.
IMAGE_STATE_CACHE = 4


Multimask = Literal["auto", "best", "single", "any", "0", "1", "2", "3"]
"""Which of SAM's four masks a prompt gets: ``"best"`` the best of the three ambiguity-aware
masks by predicted IoU, ``"single"`` the single-mask output, ``"any"`` the best of all four by
predicted IoU, ``"auto"`` what the model's configuration says for the prompt's family
(``SamConfig.auto_multimask``), or a candidate by its index (``"0"`` the single-mask
output, ``"1"``-``"3"`` the three; what the widget's candidate key cycles through)."""
MULTIMASK_MODES: tuple[str, ...] = ("auto", "best", "single", "any")
CANDIDATES: tuple[str, ...] = ("0", "1", "2", "3")


def prompt_family(prompt: Prompt) -> str:
    """The family of a prompt: "click" (one positive point), "clicks" (several points, or
    negative ones, no box), "box", "box+points" or "mask" (a dense prompt, with anything)."""
    if prompt.mask is not None or prompt.mask_logits is not None:
        return "mask"
    if prompt.box is not None:
        return "box+points" if len(prompt.points) else "box"
    single = len(prompt.points) == 1 and prompt.labels[0] == PointLabel.POSITIVE
    return "click" if single else "clicks"


def mask_choice(prompt: Prompt, multimask: Multimask, auto: tuple[tuple[str, str], ...]) -> str:
    """The mode ``prompt`` is decoded in: ``multimask`` itself, or for ``"auto"`` the mode
    ``auto`` (the model's ``SamConfig.auto_multimask``: family -> mode pairs) gives its
    family; a family it does not name gets the single-mask output."""
    if multimask not in MULTIMASK_MODES + CANDIDATES:
        raise ValueError(f"multimask must be one of {', '.join(MULTIMASK_MODES)} or a "
                         f"candidate 0-3, got {multimask!r}")  # fmt: skip
    if multimask != "auto":
        return multimask
    return dict(auto).get(prompt_family(prompt), "single")


def chosen_candidate(mode: str, scores: torch.Tensor) -> torch.Tensor:
    """(B,) int64 index (0-3) of the mask ``mode`` picks among the four candidates whose
    predicted IoUs are ``scores`` (B, 4): 0 is the single-mask output."""
    if mode == "single":
        return torch.zeros(len(scores), dtype=torch.int64)
    if mode in CANDIDATES:
        return torch.full((len(scores),), int(mode), dtype=torch.int64)
    if mode == "best":
        return 1 + scores[:, 1:].argmax(1)
    return scores.argmax(1)


class AcceleratorFallbackWarning(UserWarning):
    """The image encoder ran out of accelerator memory and the model moved to the CPU."""


def _free_accelerator_memory() -> None:
    import gc

    gc.collect()
    for backend in ("cuda", "mps", "xpu"):
        module = getattr(torch, backend, None)
        available = getattr(module, "is_available", lambda: False)
        if available():
            module.empty_cache()


@dataclass(frozen=True, eq=False)
class ImageEmbedding:
    """The image encoder's output for one 2D image, and what is needed to use it again.

    features: (C, h, w) float32 tensor (C = 256, h = w = 64 for the official models);
    geometry: image and model-input sizes (see :class:`~napari_sam.transforms.Geometry`);
    signature: identifies model, weights and preprocessing; a predictor refuses an embedding
    whose signature is not its own. Plain tensors, ints and a string: serialisable as is.
    """

    features: torch.Tensor
    geometry: Geometry
    signature: str

    @property
    def original_size(self) -> tuple[int, int]:
        """The image's (rows, cols)."""
        return self.geometry.original_size


@dataclass(frozen=True, eq=False)
class MaskPrediction:
    """Masks for B objects, in the order their prompts were given.

    Candidates 0-3 are SAM's four outputs: 0 the single-mask output, 1-3 the three
    ambiguity-aware masks (which one is chosen: :func:`mask_choice`).

    masks: each object's chosen candidate at the image's resolution; scores: (B,) float32
    predicted IoU of those; all_scores: (B, 4) float32 predicted IoU of every candidate;
    best: (B,) int64 index of the chosen candidate; logits: (B, L, L) float32 low-res logits
    of the chosen masks (feed back via ``Prompt.with_mask_logits``); all_logits:
    (B, 4, L, L) float32 of every candidate.
    """

    masks: tuple[ObjectMask, ...]
    scores: np.ndarray
    all_scores: np.ndarray
    best: np.ndarray
    logits: torch.Tensor
    all_logits: torch.Tensor
    geometry: Geometry
    mask_threshold: float

    def __len__(self) -> int:
        return len(self.masks)

    def candidate(self, obj: int, k: int) -> ObjectMask:
        """Candidate ``k`` (0-3) of object ``obj`` at the image's resolution."""
        return upsample_mask(self.all_logits[obj, k], self.geometry, self.mask_threshold)


class Predictor:
    """SAM's prompt-to-mask path for one model; holds no image, so one predictor serves
    any number of images, slices and tiles (their :class:`ImageEmbedding` s carry the state).

    model: a :class:`napari_sam.model.sam.Sam` (``config``, ``encode``, ``prompt_encoder``,
    ``mask_decoder``); weights_id: identifies the weights in embedding signatures (a hash).
    max_batch: objects decoded together at most (bounds memory: each holds a few copies of
    the image embedding inside the decoder).

    The decoder's image-side work that every mask-free prompt shares is kept for the last
    ``IMAGE_STATE_CACHE`` embeddings decoded (held by identity, released with them); change
    the model's weights in place and create a new predictor.
    """

    def __init__(self, model, *, weights_id: str = "", max_batch: int = 32,
                 instance_decoder=None) -> None:  # fmt: skip
        self.model = model.eval()
        #: the :class:`~napari_sam.model.instance_decoder.InstanceDecoder` of automatic
        #: instance segmentation on this model's embeddings, or None (no AIS / APG)
        self.instance_decoder = None if instance_decoder is None else instance_decoder.eval()
        self.config = model.config
        self.max_batch = max_batch
        #: identifies the weights (a file hash; an adapted encoder adds its own)
        self.weights_id = weights_id
        cfg = self.config
        text = "|".join(
            map(
                str,
                (
                    cfg.name,
                    weights_id,
                    cfg.image_size,
                    cfg.pixel_mean,
                    cfg.pixel_std,
                    TRANSFORM_VERSION,
                ),
            )
        )
        self.signature = f"{cfg.name}:{hashlib.sha1(text.encode()).hexdigest()[:16]}"
        self._states: list[tuple[weakref.ref, ImageState]] = []  # most recent last
        #: why the model moved to the CPU (accelerator out of memory), or None
        self.fallback_note: str | None = None
        #: warn (:class:`AcceleratorFallbackWarning`) when the model moves to the CPU; a GUI
        #: that reports :attr:`fallback_note` itself turns this off (changing the process's
        #: warning filters from a worker thread is not thread safe)
        self.warn_on_fallback = True

    @classmethod
    def load(
        cls, model: str | None = None, *, device: str = "auto", precision: str = "auto",
        decoder: str | None = None,
    ) -> Predictor:
        """A predictor for weights ``model`` (a name or a file path; default: the bundled
        model when shipped, else the default published one), on ``device`` (auto, cuda, mps,
        cpu) with the image encoder and the instance decoder in ``precision`` (auto, fp32,
        bf16, fp16). ``decoder``: an instance decoder file (default: the one in or beside the
        weights, if any; see :func:`~napari_sam.model.checkpoints.load_model`)."""
        from napari_sam.device import resolve_device, resolve_precision
        from napari_sam.model.checkpoints import load_model
        from napari_sam.model.download import default_weights

        torch_device = resolve_device(device)
        loaded = load_model(model or default_weights(), torch_device, decoder=decoder)
        loaded.model.set_compute_dtype(resolve_precision(precision, torch_device))
        return cls(loaded.model, weights_id=loaded.weights_hash,
                   instance_decoder=loaded.decoder)  # fmt: skip

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.inference_mode()
    def embed(
        self,
        image: np.ndarray,
        *,
        rgb: bool | None = None,
        channel_axis: int = 0,
        channel: Channel = None,
        contrast_limits=None,
    ) -> ImageEmbedding:
        """Encode one 2D image (see :func:`napari_sam.image.to_model_image` for accepted
        data and the keyword arguments). Already prepared (H, W, 3) float input on 0-255
        needs ``contrast_limits=(0, 255)``."""
        model_image = to_model_image(
            image,
            rgb=rgb,
            channel_axis=channel_axis,
            channel=channel,
            contrast_limits=contrast_limits,
        )
        batch, geometry = preprocess(model_image, self.config)
        features = self._encode(batch)[0]
        return ImageEmbedding(features.to(torch.float32), geometry, self.signature)

    @torch.inference_mode()
    def instance_maps(self, embedding: ImageEmbedding, model_image: np.ndarray | None = None
                      ) -> np.ndarray:  # fmt: skip
        """The instance decoder's maps of an embedded image: (3, rows, cols) float32 in
        [0, 1] at the image's resolution, channels foreground, centre distance, boundary
        distance (:class:`~napari_sam.model.instance_decoder.Channel`). ``model_image``: the
        (rows, cols, 3) model image the embedding was made from (as
        :func:`~napari_sam.image.to_model_image` gives it), read by decoders with an image
        skip (``InstanceDecoderConfig.image_skip``). The decoder's convolutions run in the
        image encoder's compute dtype (``precision`` of :meth:`load`; under autocast on CPU
        and CUDA, so its norms stay float32): bf16 halves their time on CPUs with AMX /
        AVX512-BF16. Raises ``ValueError`` when this model has no instance
        decoder, the embedding is another model's, or the image is missing."""
        if self.instance_decoder is None:
            raise ValueError(f"{self.config.name} has no instance decoder: use automatic mode "
                             "amg, or load a decoder (--decoder FILE)")  # fmt: skip
        if embedding.signature != self.signature:
            raise ValueError(f"the embedding was made by {embedding.signature}, this "
                             f"predictor is {self.signature}: embed the image again")  # fmt: skip
        geometry = embedding.geometry
        decoder = self.instance_decoder
        device = next(decoder.parameters()).device
        features = embedding.features[None].to(device, torch.float32)
        image = None
        if decoder.config.image_skip:
            if model_image is None or tuple(model_image.shape[:2]) != geometry.original_size:
                raise ValueError("this instance decoder reads the image: give the model image "
                                 f"of the embedded {geometry.original_size} image")  # fmt: skip
            image = preprocess(model_image, self.config)[0].to(device)
        dtype = getattr(self.model, "compute_dtype", torch.float32)
        with torch.autocast(device.type, dtype=dtype,
                            enabled=dtype != torch.float32 and device.type in ("cpu", "cuda")):
            maps = decoder(features, geometry.input_size, geometry.original_size, image)[0]
        return maps.to("cpu", torch.float32).numpy()

    def _encode(self, batch: torch.Tensor) -> torch.Tensor:
        """(1, 3, S, S) -> (1, C, h, w). When the accelerator runs out of memory: free its
        cache, move the model to the CPU, warn (:class:`AcceleratorFallbackWarning`; the
        reason stays in :attr:`fallback_note`) and encode again there."""
        try:
            return self.model.encode(batch)
        except torch.OutOfMemoryError as exc:  # CUDA / XPU / MPS allocators
            if self.device.type == "cpu":
                raise
            reason = str(exc).splitlines()[0] if str(exc) else "out of memory"
            del exc  # its traceback holds the failed allocation's tensors
        self._fall_back_to_cpu(reason)
        return self.model.encode(batch)

    def _fall_back_to_cpu(self, reason: str) -> None:
        _free_accelerator_memory()
        self.model.to("cpu")
        if self.instance_decoder is not None:
            self.instance_decoder.to("cpu")
        if getattr(self.model, "compute_dtype", torch.float32) == torch.float16:
            self.model.set_compute_dtype(torch.float32)  # fp16 kernels are missing on CPU
        self._states = []  # decoder tensors of the old device
        self.fallback_note = (
            f"the accelerator ran out of memory ({reason}); the model now runs on the CPU "
            "(slower). Choose a smaller model or free GPU memory, then choose the GPU again."
        )
        if self.warn_on_fallback:
            warnings.warn(self.fallback_note, AcceleratorFallbackWarning, stacklevel=3)

    @torch.inference_mode()
    def predict(
        self, embedding: ImageEmbedding, prompts: Prompt | Sequence[Prompt],
        multimask: Multimask = "auto",
    ) -> MaskPrediction:
        """Decode the masks of one or more objects on an embedded image; ``multimask`` picks
        each object's mask among the four (:func:`mask_choice`).

        Raises ``ValueError`` for prompts that do not fit the image, an unknown
        ``multimask``, or an embedding made with another model or preprocessing.
        """
        if embedding.signature != self.signature:
            raise ValueError(
                f"the embedding was made by {embedding.signature}, this predictor is "
                f"{self.signature}: embed the image again"
            )
        prompts = [prompts] if isinstance(prompts, Prompt) else list(prompts)
        if not prompts:
            raise ValueError("no prompts to segment from")
        modes = [mask_choice(p, multimask, self.config.auto_multimask) for p in prompts]
        geometry = embedding.geometry
        for prompt in prompts:
            prompt.validate(geometry.original_size)
        prompts = [prompt.within(geometry.original_size) for prompt in prompts]
        n = len(prompts)
        L = geometry.low_res_size
        all_logits = torch.empty((n, 4, L, L), dtype=torch.float32)
        all_scores = torch.empty((n, 4), dtype=torch.float32)
        groups: dict[tuple, list[int]] = {}
        for i, prompt in enumerate(prompts):
            groups.setdefault(prompt.kind, []).append(i)
        for members in groups.values():
            for start in range(0, len(members), self.max_batch):
                chunk = members[start : start + self.max_batch]
                low, iou = self._decode_fitting(embedding, [prompts[i] for i in chunk])
                all_logits[chunk] = low.to("cpu", torch.float32)
                all_scores[chunk] = iou.to("cpu", torch.float32)
        best = torch.stack([chosen_candidate(mode, all_scores[i : i + 1])[0]
                            for i, mode in enumerate(modes)])
        logits = all_logits[torch.arange(n), best]
        threshold = self.config.mask_threshold
        masks = tuple(upsample_mask(logits[i], geometry, threshold) for i in range(n))
        return MaskPrediction(
            masks=masks,
            scores=all_scores[torch.arange(n), best].numpy(),
            all_scores=all_scores.numpy(),
            best=best.numpy(),
            logits=logits,
            all_logits=all_logits,
            geometry=geometry,
            mask_threshold=threshold,
        )

    @torch.inference_mode()
    def decode_low_res(
        self, embedding: ImageEmbedding, prompts: Sequence[Prompt]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All three candidate masks of prompts of one kind (e.g. the single points of
        automatic mode), as low-res logits (B, 3, L, L) and IoU predictions (B, 3) on the
        CPU; nothing upsampled. Prompts are not checked: :meth:`predict` is the checked
        path. Out of memory on the accelerator is handled as in :meth:`predict`."""
        return self._decode_fitting(embedding, list(prompts), multimask=True)

    def _image_state(self, embedding: ImageEmbedding, dense: torch.Tensor | None = None):
        """The decoder's image-side tensors for ``embedding`` and a dense prompt embedding
        (B, C, h, w); None: no mask prompt, the state shared by all such prompts (cached)."""
        model = self.model
        if dense is not None:
            features = embedding.features[None].to(self.device)
            image_pe = model.prompt_encoder.get_dense_pe()
            return prepare_image(model.mask_decoder, features, image_pe, dense, shared=False)
        for ref, state in self._states:
            if ref() is embedding and state.keys.device == self.device:
                return state
        features = embedding.features[None].to(self.device)
        no_mask = model.prompt_encoder.no_mask_embed.weight.view(1, -1, 1, 1)
        image_pe = model.prompt_encoder.get_dense_pe()
        state = prepare_image(model.mask_decoder, features, image_pe, no_mask, shared=True)
        live = [(ref, st) for ref, st in self._states if ref() not in (None, embedding)]
        self._states = [*live[-(IMAGE_STATE_CACHE - 1) :], (weakref.ref(embedding), state)]
        return state

    def _decode_fitting(
        self, embedding: ImageEmbedding, prompts: list[Prompt], multimask: bool | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`_decode` (``multimask`` as there); when the accelerator runs out of memory,
        the batch is halved (each half retried the same way), and a single prompt that still
        does not fit moves the model to the CPU (:meth:`_fall_back_to_cpu`). Returns CPU
        tensors."""
        try:
            low, iou = self._decode(embedding, prompts, multimask)
            return low.cpu(), iou.cpu()
        except torch.OutOfMemoryError as exc:
            if self.device.type == "cpu":
                raise
            reason = str(exc).splitlines()[0] if str(exc) else "out of memory"
            del exc
        _free_accelerator_memory()
        if len(prompts) == 1:
            self._fall_back_to_cpu(reason)
            return self._decode_fitting(embedding, prompts, multimask)
        half = len(prompts) // 2
        first = self._decode_fitting(embedding, prompts[:half], multimask)
        second = self._decode_fitting(embedding, prompts[half:], multimask)
        return torch.cat([first[0], second[0]]), torch.cat([first[1], second[1]])

    def _decode(
        self, embedding: ImageEmbedding, prompts: list[Prompt], multimask: bool | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts of one kind -> low-res logits (B, K, L, L) and IoU predictions (B, K):
        ``multimask`` None: all four outputs (single-mask first); True: the three only (what
        automatic mode filters; the fourth is not computed)."""
        device = self.device
        geometry = embedding.geometry
        points = boxes = masks = None
        if len(prompts[0].points):
            coords = points_to_model(np.stack([p.points for p in prompts]), geometry)
            labels = torch.from_numpy(np.stack([p.labels for p in prompts]))
            points = (coords.to(device), labels.to(device, torch.int32))
        if prompts[0].box is not None:
            boxes = boxes_to_model(np.stack([p.box for p in prompts]), geometry).to(device)
        if prompts[0].mask is not None or prompts[0].mask_logits is not None:
            dense = [
                mask_to_logits(p.mask, geometry)
                if p.mask is not None
                else torch.from_numpy(p.mask_logits)[None]
                for p in prompts
            ]
            masks = torch.stack(dense).to(device)
        sparse, dense_emb = self.model.prompt_encoder(points=points, boxes=boxes, masks=masks)
        state = self._image_state(embedding, dense_emb if masks is not None else None)
        return decode(self.model.mask_decoder, state, sparse, multimask_output=multimask)
