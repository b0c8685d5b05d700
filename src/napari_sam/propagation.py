"""Propagation of one object through a stack axis (z or t: the same code).

The stack axis is a sequence of slices (flat slice indices of a
:class:`~napari_sam.stack_embeddings.StackEmbeddings`, see :func:`axis_slices`); a *position* is an index
into it. From prompts on one or more positions, :func:`propagate` segments the object on
those slices, then slice by slice away from them, prompting each slice with the previous
slice's mask: by default a positive click at its deepest pixel (optionally with its low-res
logits or mask as a dense prompt, and its box, grown by a margin, instead of or with the
click). Each slice's mask carries its evidence (:class:`~napari_sam.evidence.SliceEvidence`:
overlap with the previous mask, growth, contrast against its surroundings relative to the
annotated slice, stability, predicted IoU). A front stops where that evidence says the object
has ended (:class:`PropagationConfig`), when the mask is empty, or before a slice where the
user put only negative points. Where a bright object fades at once (its end in z), its mask
is cut to the object's edge level on the annotated slice, and where it has also faded well
below the annotated slice's contrast, to a level towards its own peak on that slice
(:mod:`napari_sam.edge_level`).
Between two annotated slices the gap is filled from both ends, alternately, until the fronts
meet. Each slice goes through
:func:`napari_sam.plane_segmentation.segment_plane`, so tiled slices propagate the same way.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Literal

import numpy as np
from scipy import ndimage

from napari_sam.edge_level import cut_to_level, edge_level
from napari_sam.evidence import (
    SliceEvidence,
    Surround,
    confidence,
    mask_overlap,
    object_contrast,
    reference_contrast,
    stability_score,
)
from napari_sam.motion import moved_mask, object_shift
from napari_sam.plane_segmentation import PlaneMask, TiledEmbeddings, segment_plane
from napari_sam.prompts import PointLabel, Prompt
from napari_sam.tile_grid import Box
from napari_sam.transforms import ObjectMask
from napari_sam.zoom import ZoomConfig

Progress = Generator[tuple[int, int], None, "Propagation"]
__all__ = ["Propagation", "PropagationConfig", "Stop", "axis_slices", "carried_prompt",
           "deepest_point", "is_stop", "mask_overlap", "propagate"]  # fmt: skip


@dataclass(frozen=True)
class PropagationConfig:
    """How far and how carefully to propagate.

    min_score: stop when the predicted IoU of a slice's mask is below this; min_overlap:
    stop when its overlap with the previous slice's mask (:func:`mask_overlap`) is below
    this; max_growth: stop when its area is more than this times the previous slice's;
    min_contrast: stop when its contrast against its surroundings falls below this fraction
    of the contrast on the annotated slice it came from (needs the pixels: see
    :func:`propagate`) while it faded by more than ``max_fade`` in this one step (a
    contrast below ``max_fade`` times the previous slice's: objects that fade slowly go
    on); max_rise: stop when its contrast rose above this times the previous slice's, from
    below the annotated slice's to above it (in z, a nucleus's contrast falls away from its
    middle; one that falls and comes back has run into the next nucleus. Through t a nucleus
    that dims a little and then brightens sharply, e.g. into mitosis, is stopped there too:
    ``max_rise=0`` turns the rule off);
    min_stability: stop when its stability score is below this (see
    :mod:`napari_sam.evidence`; 0 turns a rule off); doubtful: slices whose
    :func:`~napari_sam.evidence.confidence` is below this are listed as doubtful;
    multimask: which of SAM's masks each slice gets
    (:func:`~napari_sam.predictor.mask_choice`); max_slices: at most this
    many slices past the outermost annotated ones, per direction (None: to the stack's end);
    directions: beyond the annotated slices, go ``"both"`` ways, only ``"forward"``
    (increasing position) or only ``"backward"`` (gaps between annotated slices are always
    filled); dense: the dense prompt carried from the previous slice: ``"logits"`` (its
    low-res logits), ``"mask"`` (its binary mask) or ``"none"``; carry: the sparse prompt
    carried: ``"point"`` (a positive click at the previous mask's deepest pixel, see
    :func:`deepest_point`), ``"box"`` (the previous mask's box) or ``"point+box"``;
    box_margin: that box grows by this fraction of its size per side (at least 1 px);
    zoom: decode small objects again on a magnified window (:mod:`napari_sam.zoom`; ``"auto"``,
    ``"on"``, ``"off"`` or a :class:`~napari_sam.zoom.ZoomConfig`); edge_level: the
    object's edge level, this fraction of the way from the ring around the annotated slice's
    mask to its median inside (:mod:`napari_sam.edge_level`; bright objects; needs the
    pixels; 0 turns it off): on a slice where the object's contrast fell below ``edge_fade``
    of the previous slice's in one step (its end in z, where the mask takes in the
    out-of-focus light around it), the mask is cut to its pixels at or above that level,
    unless that leaves less than ``min_kept`` of the annotated slice's area (the object faded
    as a whole: its mask is kept as it is); end_level: where the object's contrast is below
    ``end_contrast`` of the annotated slice's and fell below ``end_fade`` of the previous
    slice's in this one step, the mask is cut instead to this fraction of the way from its
    ring to the object's peak on that slice (the 95th percentile inside its mask; 0 turns it
    off, independently of ``edge_level``): under strong blur along z (coarse z, blurred
    several times more along z than across), the light a slice or two from a nucleus's
    middle spreads over the middle's outline, well above its edge level there, and the
    cross-section is only its brightest part (the ``end_fade`` gate spares a nucleus clicked
    off its middle, which fades a little a slice as it widens). Of the two cuts the higher
    level's is written if it keeps the carried click (else it kept a brighter neighbour, not
    the object; with no click carried, ``carry="box"``, its largest piece is kept unchecked)
    and at least ``min_kept``; else the lower's on the same terms; else the model's mask. The same holds through t: a sudden dimming is cut, an object that fades
    slowly (bleaching) never is. max_shift: before it is carried, the previous slice's mask
    moves by the shift (up to this many px each way) that best matches the pixels around it
    with the next slice's (:func:`~napari_sam.motion.object_shift`; needs the pixels; 0
    turns it off): a nucleus drifting through t is followed instead of losing the strip it
    moved into, frame after frame; in z the window's surroundings stay put and the shift
    stays 0 but where the object leans. The carried click and box come from the moved mask,
    and the overlap evidence compares with it (the growth, with the area before the move:
    part of the mask may have moved off the plane); carried logits (``dense="logits"``) are
    not moved.

    The default, a click alone, follows an object to its ends and stops there: a box carried
    from the previous slice makes the mask fill it, so a nucleus that narrows towards its
    pole in z is over-segmented there, and carried logits keep a mask going past the end
    (bench_stack, bundled model, 9 nuclei: mean IoU 0.96 on their 124 slices and 2 slices
    past their ends with the click; 0.97 and 31 with click + logits; 0.89 and 92 with box +
    logits).
    """

    min_score: float = 0.3
    min_overlap: float = 0.3
    max_growth: float = 1.6
    min_contrast: float = 0.5
    max_fade: float = 0.7
    max_rise: float = 1.25
    min_stability: float = 0.5
    doubtful: float = 0.5
    multimask: str = "auto"
    max_slices: int | None = None
    directions: Literal["both", "forward", "backward"] = "both"
    dense: Literal["logits", "mask", "none"] = "mask"
    carry: Literal["point", "box", "point+box"] = "point"
    box_margin: float = 0.1
    zoom: ZoomConfig | str | None = "auto"
    edge_level: float = 0.15
    edge_fade: float = 0.9
    min_kept: float = 0.1
    end_level: float = 0.3
    end_contrast: float = 0.75
    end_fade: float = 0.8
    max_shift: int = 4

    def __post_init__(self) -> None:
        if self.directions not in ("both", "forward", "backward"):
            raise ValueError(f"directions must be both, forward or backward: {self.directions}")
        if self.dense not in ("logits", "mask", "none"):
            raise ValueError(f"dense must be logits, mask or none, got {self.dense!r}")
        if self.carry not in ("point", "box", "point+box"):
            raise ValueError(f"carry must be point, box or point+box, got {self.carry!r}")
        if not 0 <= self.edge_level < 1 or not 0 <= self.min_kept <= 1:
            raise ValueError(f"edge_level is in [0, 1) and min_kept in [0, 1], got "
                             f"{self.edge_level} and {self.min_kept}")  # fmt: skip
        if not 0 <= self.end_level < 1 or min(self.end_contrast, self.end_fade) < 0:
            raise ValueError(f"end_level is in [0, 1), end_contrast and end_fade at least 0, "
                             f"got {self.end_level}, {self.end_contrast} and "
                             f"{self.end_fade}")  # fmt: skip
        if self.edge_fade < 0:
            raise ValueError(f"edge_fade is at least 0, got {self.edge_fade}")
        if self.max_shift < 0:
            raise ValueError(f"max_shift is at least 0 (0: off), got {self.max_shift}")
        if self.max_rise != 0 and self.max_rise <= 1:
            raise ValueError(f"max_rise is 0 (off) or above 1, got {self.max_rise}")
        if self.max_slices is not None and self.max_slices < 0:
            raise ValueError(f"max_slices must be >= 0, got {self.max_slices}")


@dataclass(frozen=True)
class Stop:
    """Where a front stopped: it did not write ``position``, because of ``reason``."""

    position: int
    reason: str


@dataclass(frozen=True, eq=False)
class Propagation:
    """The object through the stack, sorted by position.

    positions: (n,) positions along the axis with a mask; masks: their plane masks;
    scores: (n,) float32 predicted IoU; sources: (n,) the annotated position each slice was
    propagated from (itself for annotated slices); stops: where and why each front stopped;
    evidence: (n,) each propagated slice's :class:`~napari_sam.evidence.SliceEvidence`
    (None on annotated slices); confidence: (n,) float32 in [0, 1] (1 on annotated slices);
    doubtful_below: the confidence under which a slice is doubtful (:meth:`doubtful`).
    """

    positions: tuple[int, ...]
    masks: tuple[ObjectMask, ...]
    scores: np.ndarray
    sources: tuple[int, ...]
    stops: tuple[Stop, ...]
    evidence: tuple[SliceEvidence | None, ...] = ()
    confidence: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    doubtful_below: float = 0.5

    def doubtful(self) -> tuple[int, ...]:
        """Positions whose mask the evidence doubts (confidence below ``doubtful_below``),
        lowest confidence first: where a user should look and re-prompt."""
        order = np.argsort(self.confidence, kind="stable")
        return tuple(self.positions[i] for i in order
                     if self.confidence[i] < self.doubtful_below)  # fmt: skip

    def to_array(self, n_positions: int) -> np.ndarray:
        """(n_positions, H, W) bool: the object on every position (empty where absent)."""
        shape = self.masks[0].shape if self.masks else (0, 0)
        out = np.zeros((n_positions, *shape), dtype=bool)
        for position, mask in zip(self.positions, self.masks):
            out[position] = mask.to_array()
        return out


def axis_slices(leading_shape: Sequence[int], axis: int, at: Sequence[int]) -> list[int]:
    """Flat slice indices (C order over ``leading_shape``) along leading axis ``axis``,
    through the leading index ``at`` (its value on ``axis`` is ignored). E.g. a (T, Z) stack,
    propagating through z at t = 3: ``axis_slices((T, Z), 1, (3, 0))``."""
    key = [int(i) for i in at]
    if len(key) != len(leading_shape) or not 0 <= axis < len(leading_shape):
        raise ValueError(f"axis {axis} and index {list(at)} do not fit leading axes "
                         f"{tuple(leading_shape)}")  # fmt: skip
    out = []
    for i in range(leading_shape[axis]):
        key[axis] = i
        out.append(int(np.ravel_multi_index(tuple(key), tuple(leading_shape))))
    return out


def is_stop(prompt: Prompt) -> bool:
    """A prompt of negative points only: the object is not on this slice."""
    return (prompt.box is None and prompt.mask is None and prompt.mask_logits is None
            and len(prompt.labels) > 0 and (prompt.labels == PointLabel.NEGATIVE).all())  # fmt: skip


def deepest_point(mask: ObjectMask, window: Box | None = None) -> tuple[int, int] | None:
    """The ``(row, col)`` pixel of ``mask`` farthest from its background (Euclidean; outside
    the crop is background), among those inside ``window`` (row0, col0, row1, col1; end
    exclusive) when given; ties go to the first in row-major order. None if there is none."""
    depth = ndimage.distance_transform_edt(np.pad(mask.crop, 1))[1:-1, 1:-1]
    r0, c0 = mask.offset
    if window is not None:  # depth is still to the mask's edge, the pick is in the window
        r0, c0 = max(window[0], r0), max(window[1], c0)
        depth = depth[r0 - mask.offset[0] : max(window[2] - mask.offset[0], 0),
                      c0 - mask.offset[1] : max(window[3] - mask.offset[1], 0)]  # fmt: skip
    if depth.size == 0 or depth.max() <= 0:
        return None
    r, c = np.unravel_index(int(np.argmax(depth)), depth.shape)
    return int(r) + r0, int(c) + c0


def carried_prompt(previous: PlaneMask, config: PropagationConfig,
                   window: Box | None = None) -> Prompt:  # fmt: skip
    """The prompt for the next slice from the previous slice's result (plane frame): a
    positive click at the mask's deepest pixel and / or its box grown by
    ``config.box_margin`` (``config.carry``), plus the configured dense prompt. ``window``:
    the tile window the prompt goes to (the click stays inside it; if the mask has no pixel
    there, the box is carried instead)."""
    points, labels, box = np.zeros((0, 2)), np.zeros(0, np.int64), None
    point = deepest_point(previous.mask, window) if "point" in config.carry else None
    if point is not None:
        points, labels = np.array([point], float), np.array([1])
    if "box" in config.carry or point is None:
        r0, c0, r1, c1 = previous.mask.bbox
        rows, cols = previous.mask.shape
        dr = max(1.0, config.box_margin * (r1 - r0))
        dc = max(1.0, config.box_margin * (c1 - c0))
        box = np.array([max(r0 - dr, 0), max(c0 - dc, 0), min(r1 - 1 + dr, rows - 1),
                        min(c1 - 1 + dc, cols - 1)])  # fmt: skip
    dense = {"logits": {"mask_logits": previous.logits},
             "mask": {"mask": previous.mask.to_array()}}.get(config.dense, {})  # fmt: skip
    return Prompt(points=points, labels=labels, box=box, **dense)


@dataclass
class _Front:
    """One direction of travel: from ``source``, next ``position``, up to ``limit`` (incl.)."""

    source: int
    position: int
    step: int
    limit: int
    previous: PlaneMask | None = None
    alive: bool = True


def propagate(
    embeddings: TiledEmbeddings,
    predictor,
    annotations: Mapping[int, Prompt],
    *,
    slices: Sequence[int],
    config: PropagationConfig = PropagationConfig(),
    max_tiles: int = 16,
    pixels: Callable[[int, Box], np.ndarray] | None = None,
) -> Progress:
    """Segment one object through the stack axis ``slices``; a generator.

    embeddings: per (slice, tile), e.g. the widget's :class:`~napari_sam.stack_embeddings.StackEmbeddings`;
    predictor: the :class:`~napari_sam.predictor.Predictor` that made them; annotations:
    position (index into ``slices``) -> the user's prompt there, plane ``(row, col)``; a
    prompt of negative points only marks a slice the object does not reach. slices: the flat
    slice index of each position (:func:`axis_slices`; ``range(n)`` for a plain z or t stack).
    pixels: ``(flat slice index, window) ->`` that window's pixels, (h, w) or (h, w, C), for
    the contrast evidence and the edge level (only around the mask); default the embeddings'
    ``source.read`` when they have one (a
    :class:`~napari_sam.stack_embeddings.StackEmbeddings`), else neither.
    Yields ``(done, total)`` slices (total: slices within reach; may end early); returns a
    :class:`Propagation` (``StopIteration.value``; see :func:`napari_sam.jobs.drain`). Close it to cancel.
    """
    n = len(slices)
    for position in annotations:
        if not 0 <= position < n:
            raise ValueError(f"annotated position {position} is outside the {n} slices")
    stops = sorted(p for p, prompt in annotations.items() if is_stop(prompt))
    annotated = sorted(p for p, prompt in annotations.items() if not is_stop(prompt))
    if not annotated:
        raise ValueError("propagation needs a positive prompt (a point, box or mask) on a slice")

    def segment(position: int, prompt: Prompt, tile: int | None = None) -> PlaneMask:
        return segment_plane(embeddings, predictor, slices[position], prompt, tile=tile,
                             max_tiles=max_tiles, zoom=config.zoom,
                             multimask=config.multimask)  # fmt: skip

    if pixels is None and hasattr(getattr(embeddings, "source", None), "read"):
        pixels = embeddings.source.read
    contrast_of = reader = None
    if pixels is not None:

        def reader(position: int) -> Callable[[Box], np.ndarray]:
            return lambda window: pixels(slices[position], window)

        def contrast_of(position: int, mask: ObjectMask, surround: Surround) -> float:
            return object_contrast(reader(position), mask, surround)[0]

    threshold = predictor.config.mask_threshold

    results: dict[int, tuple[PlaneMask, int]] = {}
    evidence: dict[int, SliceEvidence] = {}
    contrasts: dict[int, float] = {}  # position -> the object's contrast there (absolute)
    ended: list[Stop] = []
    fronts = _plan(annotated, stops, n, config)
    total = len(annotated) + len(_reach(fronts))
    done = 0
    levels: dict[int, float | None] = {}  # annotated position -> the object's edge level
    surrounds: dict[int, Surround] = {}  # annotated position -> what its contrast is against
    for position in annotated:
        results[position] = (segment(position, annotations[position]), position)
        if reader is not None:
            read, mask = reader(position), results[position][0].mask
            contrasts[position], surround = reference_contrast(read, mask)
            surrounds[position] = surround
            if config.edge_level > 0:
                levels[position] = edge_level(read, mask, config.edge_level, surround)
        done += 1
        yield done, total
    for front in fronts:
        front.previous = results[front.source][0]
    # fronts come in pairs per gap (forward, backward) plus the outer ones: step them in turn
    while any(f.alive for f in fronts):
        for front in fronts:
            if not front.alive:
                continue
            if front.position in results or _past(front):
                front.alive = False
                continue
            tile = front.previous.tile if config.dense == "logits" else None
            window = None if tile is None else embeddings.grid[tile].window
            previous_position = front.position - front.step
            previous = front.previous
            if config.max_shift > 0 and reader is not None:  # follow the object's move
                move = object_shift(reader(previous_position), reader(front.position),
                                    previous.mask, config.max_shift)  # fmt: skip
                moved = moved_mask(previous.mask, move)
                if moved.area:  # not all of it moved off the plane
                    previous = replace(previous, mask=moved)
            prompt = carried_prompt(previous, config, window)
            result = segment(front.position, prompt, tile)
            surround = surrounds.get(front.source)
            measure = None if surround is None else partial(contrast_of, surround=surround)
            found = _evidence(result, previous, front.previous.mask.area, threshold,
                              front.position, contrasts.get(front.source, 0.0),
                              contrasts.get(previous_position, 0.0), measure)  # fmt: skip
            reason = _rejection(result, found, config)
            written = result
            if not reason and surround is not None:  # the pixels are there: cut at an end
                floor = max(config.min_kept * results[front.source][0].mask.area, 1)
                cut = _end_cut(reader(front.position), result.mask, found,
                               levels.get(front.source), surround, _click(prompt), floor,
                               config)  # fmt: skip
                written = replace(result, mask=cut)
            done += 1
            yield min(done, total), total
            if reason:
                ended.append(Stop(front.position, reason))
                front.alive = False
                continue
            results[front.position] = (written, front.source)
            evidence[front.position] = found
            if contrast_of is not None:
                contrasts[front.position] = found.contrast * contrasts.get(front.source, 0.0)
            front.previous = result
            front.position += front.step
    yield total, total
    order = sorted(results)
    return Propagation(
        positions=tuple(order),
        masks=tuple(results[p][0].mask for p in order),
        scores=np.array([results[p][0].score for p in order], dtype=np.float32),
        sources=tuple(results[p][1] for p in order),
        stops=tuple(ended),
        evidence=tuple(evidence.get(p) for p in order),
        confidence=np.array([confidence(evidence[p]) if p in evidence else 1.0 for p in order],
                            dtype=np.float32),
        doubtful_below=config.doubtful,
    )


def _plan(annotated: list[int], stops: list[int], n: int, config: PropagationConfig):
    """The fronts: per gap between annotated slices, one from each end (each up to the
    nearest stop slice, or the far end); then outward from the first and last."""
    fronts = []
    for a, b in itertools.pairwise(annotated):
        inside = [s for s in stops if a < s < b]
        hi = inside[0] - 1 if inside else b - 1
        lo = inside[-1] + 1 if inside else a + 1
        fronts += [_Front(a, a + 1, 1, hi), _Front(b, b - 1, -1, lo)]
    reach = n if config.max_slices is None else config.max_slices
    first, last = annotated[0], annotated[-1]
    if config.directions in ("both", "backward"):
        low = max([s for s in stops if s < first], default=-1) + 1
        fronts.append(_Front(first, first - 1, -1, max(low, first - reach)))
    if config.directions in ("both", "forward"):
        high = min([s for s in stops if s > last], default=n) - 1
        fronts.append(_Front(last, last + 1, 1, min(high, last + reach)))
    return [f for f in fronts if not _past(f)]


def _past(front: _Front) -> bool:
    return (front.position - front.limit) * front.step > 0


def _reach(fronts: list[_Front]) -> set[int]:
    """Every position some front may write."""
    return {p for f in fronts for p in range(f.position, f.limit + f.step, f.step)}


def _evidence(
    result: PlaneMask, previous: PlaneMask, previous_area: int, threshold: float, position: int,
    source_contrast: float, previous_contrast: float,
    contrast_of: Callable[[int, ObjectMask], float] | None,
) -> SliceEvidence:
    """The evidence of ``result`` (on ``position``) against the mask carried to it,
    ``previous`` (moved with the object), whose own area was ``previous_area`` (before a
    move took part of it off the plane); ``source_contrast`` and
    ``previous_contrast``: the object's contrast on its annotated and its previous slice
    (0: not known, and the contrast evidence is neutral, 1)."""
    contrast = fade = 1.0
    if contrast_of is not None and source_contrast > 0 and result.mask.area:
        here = contrast_of(position, result.mask)
        contrast = here / source_contrast
        fade = here / previous_contrast if previous_contrast > 0 else 1.0
    return SliceEvidence(
        score=float(result.score),
        overlap=mask_overlap(result.mask, previous.mask),
        growth=result.mask.area / max(previous_area, 1),
        contrast=float(contrast),
        stability=stability_score(result.logits, threshold),
        fade=float(fade),
    )


def _end_cut(read: Callable[[Box], np.ndarray], mask: ObjectMask, evidence: SliceEvidence,
             edge: float | None, surround: Surround, click: tuple[int, int] | None,
             floor: float, config: PropagationConfig) -> ObjectMask:  # fmt: skip
    """The mask written for a propagated slice's ``mask`` (see :class:`PropagationConfig`):
    where the object faded at once, cut to a level: towards its own peak on this slice
    (``config.end_level``, where its contrast is under ``config.end_contrast`` of the
    annotated slice's and fell under ``config.end_fade`` of the previous slice's) or its
    ``edge`` level from the annotated slice (where it fell under ``config.edge_fade``). The
    highest level whose cut keeps the ``click`` (a bright neighbour the mask ran into is not
    the object) and at least ``floor`` pixels wins; with none, ``mask`` as it is (the object
    faded as a whole). ``read``: this slice's pixels."""
    levels = [edge] if evidence.fade < config.edge_fade else []
    if (config.end_level > 0 and evidence.contrast < config.end_contrast
            and evidence.fade < config.end_fade):  # fmt: skip
        levels.append(edge_level(read, mask, config.end_level, surround, percentile=95.0))
    for level in sorted((level for level in levels if level is not None), reverse=True):
        cut = cut_to_level(read, mask, level, click)
        if cut.area >= floor and (click is None or cut.holds(np.array([click]))[0]):
            return cut
    return mask


def _click(prompt: Prompt) -> tuple[int, int] | None:
    """The pixel of ``prompt``'s first positive point (None without one)."""
    positive = np.rint(prompt.points[prompt.labels == PointLabel.POSITIVE]).astype(int)
    return None if len(positive) == 0 else (int(positive[0, 0]), int(positive[0, 1]))


def _rejection(result: PlaneMask, evidence: SliceEvidence, config: PropagationConfig) -> str:
    """Why ``result`` does not continue the object ("" if it does)."""
    if result.mask.area == 0:
        return "empty mask"
    before = evidence.contrast / evidence.fade if evidence.fade > 0 else 0.0  # previous slice's
    checks = (
        (evidence.score < config.min_score, f"predicted IoU {evidence.score:.2f} < "
         f"{config.min_score}"),
        (evidence.overlap < config.min_overlap, f"overlap with the previous slice "
         f"{evidence.overlap:.2f} < {config.min_overlap}"),
        (config.max_growth > 0 and evidence.growth > config.max_growth,
         f"area {evidence.growth:.2f}x the previous slice's > {config.max_growth}x"),
        (evidence.contrast < config.min_contrast and evidence.fade < config.max_fade,
         f"contrast {evidence.contrast:.2f} of the annotated slice's < {config.min_contrast}, "
         f"{evidence.fade:.2f} of the previous slice's"),
        (config.max_rise > 0 and evidence.fade > config.max_rise and before < 1 < evidence.contrast,
         f"contrast rose {evidence.fade:.2f}x the previous slice's > {config.max_rise}x, from "
         f"{before:.2f} to {evidence.contrast:.2f} of the annotated slice's: another object"),
        (evidence.stability < config.min_stability, f"stability {evidence.stability:.2f} < "
         f"{config.min_stability}"),
    )  # fmt: skip
    return next((reason for failed, reason in checks if failed), "")
