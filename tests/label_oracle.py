"""A predictor stand-in that sees the true labels, for testing prompting logic exactly.

The "embedding" of a (slice, tile) window is the window of a label volume. The oracle returns
the object under the first positive point, else the label covering most of the dense prompt,
else most of the box, clipped to the window (as a model sees only its window). A negative
point on that object, or nothing found, gives an empty mask.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import torch

from napari_sam.plane_segmentation import WindowEmbeddings, crop_mask
from napari_sam.prompts import PointLabel
from napari_sam.tile_grid import TileGrid


@dataclass(frozen=True, eq=False)
class LabelWindow:
    """labels: (h, w) int window of slice ``slice_index``."""

    labels: np.ndarray
    slice_index: int


@dataclass(frozen=True, eq=False)
class OraclePrediction:
    masks: tuple
    scores: np.ndarray
    logits: torch.Tensor  # (1, h, w): +10 inside the mask, -10 outside


@dataclass(eq=False)
class LabelOracle:
    """``score(slice_index)``: the predicted IoU it reports; ``calls``: (slice, prompt) log;
    ``config.name``: not a fast model, so ``zoom="auto"`` leaves it alone."""

    score: object = lambda s: 0.95
    calls: list = field(default_factory=list)
    config: object = field(default_factory=lambda: SimpleNamespace(name="label-oracle",
                                                                 mask_threshold=0.0))

    def predict(self, emb: LabelWindow, prompt, multimask: str = "auto") -> OraclePrediction:
        self.calls.append((emb.slice_index, prompt))
        labels, obj = emb.labels, 0
        positive = prompt.points[prompt.labels == PointLabel.POSITIVE]
        if len(positive):
            r, c = np.round(positive[0]).astype(int)
            obj = labels[r, c]
        elif prompt.mask is not None or prompt.mask_logits is not None:
            dense = prompt.mask if prompt.mask is not None else prompt.mask_logits > 0
            obj = _most_common(labels[dense])
        elif prompt.box is not None:
            r0, c0, r1, c1 = np.round(prompt.box).astype(int)
            obj = _most_common(labels[r0 : r1 + 1, c0 : c1 + 1])
        negative = np.round(prompt.points[prompt.labels == PointLabel.NEGATIVE]).astype(int)
        if obj and any(labels[r, c] == obj for r, c in negative):
            obj = 0
        mask = (labels == obj) if obj else np.zeros(labels.shape, bool)
        score = self.score(emb.slice_index) if obj else 0.0
        logits = torch.from_numpy(np.where(mask, 10.0, -10.0).astype(np.float32))[None]
        return OraclePrediction((crop_mask(mask, (0, 0), mask.shape),),
                                np.array([score], np.float32), logits)  # fmt: skip


def _most_common(values: np.ndarray) -> int:
    values = values[values != 0]
    return int(np.bincount(values).argmax()) if values.size else 0


def oracle_embeddings(volume: np.ndarray, grid: TileGrid | None = None) -> WindowEmbeddings:
    """Windows of a (S, H, W) label volume as :class:`WindowEmbeddings` (slice = first axis)."""
    grid = grid or TileGrid(volume.shape[1:])

    def embed(s, window):
        r0, c0, r1, c1 = window
        return LabelWindow(volume[s, r0:r1, c0:c1], s)

    return WindowEmbeddings(grid, embed, cache_size=10_000)


def ball(shape, centre, radius) -> np.ndarray:
    """(Z, H, W) bool ball of ``radius`` (pixels) around ``centre`` (z, row, col)."""
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum((g - c) ** 2 for g, c in zip(grids, centre)) <= radius**2


def match_counts(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int, int]:
    """(matches at IoU > 0.5, objects in ``pred``, objects in ``truth``); such matches are
    one to one."""
    n_pred, n_true = len(np.unique(pred[pred > 0])), len(np.unique(truth[truth > 0]))
    both = (pred > 0) & (truth > 0)
    if not both.any():
        return 0, n_pred, n_true
    pairs, inter = np.unique(np.stack([pred[both], truth[both]]), axis=1, return_counts=True)
    union = np.bincount(pred.ravel())[pairs[0]] + np.bincount(truth.ravel())[pairs[1]] - inter
    return int((inter / union > 0.5).sum()), n_pred, n_true


def f1(pred: np.ndarray, truth: np.ndarray) -> float:
    """F1 at IoU > 0.5 of instance labels ``pred`` against ``truth`` (same shape)."""
    matches, n_pred, n_true = match_counts(pred, truth)
    return 1.0 if n_pred + n_true == 0 else 2 * matches / (n_pred + n_true)
