"""Synthetic fluorescence microscopy of nuclei, with exact instance labels.

Nuclei are textured ellipses (ellipsoids in 3D), touching and overlapping, of varied size and
brightness, under out-of-focus blur, uneven illumination, an intensity nonlinearity and
Poisson + Gaussian noise. Used for the sample data, the tests and the bundled model's training.

:data:`WIDE_STYLE` widens that against what fails on nuclei from elsewhere: lobed outlines,
neighbours that meet along a shared border with no dark gap, dim nuclei beside bright ones
(lognormal brightness), nucleoli, haze from out-of-focus nuclei that have no label, and
nuclei down to 5 px across. Each of those is off in :class:`NucleiStyle`'s defaults, and off
it draws no random number, so an image of the default style is the same as before.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
from scipy import ndimage as ndi


@dataclass(frozen=True)
class NucleiStyle:
    """Ranges the generator draws from; every image draws its own values inside them.

    The defaults are broad (the bundled model's training distribution at full difficulty):
    radius 4-40 px, sparse to dense touching clusters, textured and dim nuclei, out-of-focus
    blur, uneven illumination, an intensity nonlinearity and noise of every level.
    """

    radius: tuple[float, float] = (4.0, 40.0)  # semi-axis range, pixels
    elongation: tuple[float, float] = (1.0, 2.0)  # major / minor axis ratio
    coverage: tuple[float, float] = (0.05, 0.5)  # fraction of the area covered by nuclei
    cluster_fraction: tuple[float, float] = (0.0, 0.8)  # share of nuclei placed next to another
    brightness: tuple[float, float] = (0.15, 1.0)  # per-nucleus peak, relative
    texture: tuple[float, float] = (0.0, 0.6)  # relative amplitude of chromatin texture
    blur: tuple[float, float] = (0.0, 3.0)  # Gaussian sigma of out-of-focus blur, pixels
    background: tuple[float, float] = (0.0, 0.3)  # mean background, relative
    illumination: tuple[float, float] = (0.0, 0.8)  # amplitude of uneven illumination
    gamma: tuple[float, float] = (0.5, 1.8)  # intensity nonlinearity
    photons: tuple[float, float] = (10.0, 5000.0)  # photons at peak brightness (Poisson)
    read_noise: tuple[float, float] = (0.0, 0.08)  # Gaussian noise, relative
    hidden: tuple[float, float] = (0.0, 0.25)  # share of a nucleus later ones may cover
    # Off by default (0, 0); see WIDE_STYLE.
    lobes: tuple[float, float] = (0.0, 0.0)  # amplitude of the outline's harmonics 2-5
    contact: tuple[float, float] = (0.0, 0.0)  # share of clustered nuclei pressed together
    brightness_spread: tuple[float, float] = (0.0, 0.0)  # lognormal sigma of brightness
    nucleoli: tuple[float, float] = (0.0, 0.0)  # relative contrast of 0-3 spots per nucleus
    haze: tuple[float, float] = (0.0, 0.0)  # brightness of unlabelled out-of-focus nuclei


# The easy end of the training curriculum: large, bright, isolated, clean nuclei.
EASY_STYLE = NucleiStyle(
    radius=(12.0, 30.0),
    elongation=(1.0, 1.4),
    coverage=(0.08, 0.2),
    cluster_fraction=(0.0, 0.1),
    brightness=(0.7, 1.0),
    texture=(0.0, 0.1),
    blur=(0.0, 1.0),
    background=(0.0, 0.1),
    illumination=(0.0, 0.1),
    gamma=(0.9, 1.1),
    photons=(2000.0, 5000.0),
    read_noise=(0.0, 0.01),
    hidden=(0.0, 0.05),
)


# The broad style widened against nuclei from elsewhere (the bundled model v2's training
# distribution at full difficulty; docs/training.md).
WIDE_STYLE = NucleiStyle(
    radius=(2.5, 40.0),
    brightness=(0.1, 1.0),
    lobes=(0.0, 0.4),
    contact=(0.0, 0.8),
    brightness_spread=(0.0, 0.8),
    nucleoli=(0.0, 0.5),
    haze=(0.0, 0.5),
)

STYLES: dict[str, NucleiStyle] = {"broad": NucleiStyle(), "wide": WIDE_STYLE}
"""The full-difficulty styles a training run can name (``napari-sam train --style``)."""


def curriculum_style(
    difficulty: float, easy: NucleiStyle = EASY_STYLE, hard: NucleiStyle = NucleiStyle()
) -> NucleiStyle:
    """A style between ``easy`` (``difficulty`` 0) and ``hard`` (1), every range interpolated
    linearly at both ends (photons geometrically)."""
    d = float(np.clip(difficulty, 0.0, 1.0))
    values = {}
    for f in fields(NucleiStyle):
        (e_lo, e_hi), (h_lo, h_hi) = getattr(easy, f.name), getattr(hard, f.name)
        if f.name == "photons":
            values[f.name] = (e_lo ** (1 - d) * h_lo**d, e_hi ** (1 - d) * h_hi**d)
        else:
            values[f.name] = (e_lo * (1 - d) + h_lo * d, e_hi * (1 - d) + h_hi * d)
    return NucleiStyle(**values)


@dataclass(frozen=True)
class SyntheticImage:
    """An image and its instance labels.

    ``image``: (H, W) or (Z, H, W) uint16; ``labels``: same shape, int32, 0 = background,
    1..n the nuclei (a pixel covered by two nuclei belongs to the one drawn last, on top;
    a nucleus that would cover more than the image's ``hidden`` share of an earlier one is
    not drawn, so no nucleus ends as an ill-posed sliver behind another).
    """

    image: np.ndarray
    labels: np.ndarray


def _draw(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    return float(rng.uniform(*lo_hi))


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Zero-mean, unit-std smooth random field of ``shape`` (float32)."""
    field = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    field -= field.mean()
    return field / (field.std() + 1e-8)


def _centres(
    rng: np.random.Generator, shape: tuple[int, ...], n: int, radius: float, cluster: float,
    contact: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """(n, ndim) float centres and (n,) bool ``pressed``; a ``cluster`` share of the centres
    sits about one diameter from an earlier centre, so nuclei touch and overlap; a
    ``contact`` share of those closer (1.2-1.6 radii): pressed against that neighbour, they
    fill only the space it leaves, along a shared border."""
    centres = np.empty((n, len(shape)))
    pressed = np.zeros(n, bool)
    for i in range(n):
        if i > 0 and rng.random() < cluster:
            direction = rng.standard_normal(len(shape))
            direction /= np.linalg.norm(direction) + 1e-8
            pressed[i] = contact > 0 and rng.random() < contact
            near = (1.2, 1.6) if pressed[i] else (1.4, 2.1)
            c = centres[rng.integers(i)] + direction * radius * rng.uniform(*near)
            centres[i] = np.clip(c, 0, np.array(shape) - 1)
        else:
            centres[i] = rng.uniform(0, np.array(shape) - 1)
    return centres, pressed


# Placements tried for a nucleus (each a step away from those it would hide too much of).
PLACEMENT_TRIES = 4


def _ellipse(
    centre: np.ndarray, axes: np.ndarray, theta: float, scale: np.ndarray,
    shape: tuple[int, ...], lobes: np.ndarray | None = None,
) -> tuple[tuple[slice, ...], np.ndarray] | None:
    """The bounding box (slices of ``shape``) of an ellipse (ellipsoid) at ``centre`` with
    semi-axes ``axes`` (([z,] v, u): u is the in-plane axis turned by ``theta`` from x), and
    its normalised squared distance there (<= 1 inside); None when it has no pixel inside
    ``shape``. ``lobes``: (K, 2) amplitude and phase of the outline's harmonics 2..K+1 (its
    radius at angle phi is scaled by 1 + sum a_k cos(k phi + p_k))."""
    bulge = 1.0 if lobes is None else 1.0 + float(np.abs(lobes[:, 0]).sum())
    # Turned in-plane, the y and x extents reach up to the longest in-plane semi-axis.
    reach = np.concatenate([axes[:-2], np.full(2, axes[-2:].max() * bulge)]) / scale
    lo = np.maximum(np.floor(centre - reach).astype(int) - 1, 0)
    hi = np.minimum(np.ceil(centre + reach).astype(int) + 2, shape)
    if np.any(hi <= lo):
        return None
    grids = np.meshgrid(
        *[(np.arange(a, b) - c) * s for a, b, c, s in zip(lo, hi, centre, scale)],
        indexing="ij",
    )
    y, x = grids[-2], grids[-1]
    u = np.cos(theta) * x + np.sin(theta) * y
    v = -np.sin(theta) * x + np.cos(theta) * y
    dist2 = (u / axes[-1]) ** 2 + (v / axes[-2]) ** 2
    if lobes is not None:
        phi = np.arctan2(v / axes[-2], u / axes[-1])
        radius = 1.0 + sum(a * np.cos((k + 2) * phi + p) for k, (a, p) in enumerate(lobes))
        dist2 = dist2 / np.maximum(radius, 0.3) ** 2
    if len(shape) == 3:
        dist2 = dist2 + (grids[0] / axes[0]) ** 2
    if not np.any(dist2 <= 1.0):
        return None
    return tuple(slice(a, b) for a, b in zip(lo, hi)), dist2


def _nucleoli(
    rng: np.random.Generator, box: tuple[slice, ...], centre: np.ndarray, radius: float,
    scale: np.ndarray, contrast: float,
) -> np.ndarray:
    """A multiplicative field over ``box``: 0-3 round spots (radius / 5 .. radius / 3) near
    the nucleus's centre, each brighter or darker by up to ``contrast``."""
    grids = np.meshgrid(*[np.arange(b.start, b.stop) * s for b, s in zip(box, scale)],
                        indexing="ij")  # fmt: skip
    field = np.ones(grids[0].shape, np.float32)
    for _ in range(int(rng.integers(0, 4))):
        at = centre * scale + rng.uniform(-0.5, 0.5, len(box)) * radius
        size = rng.uniform(radius / 5, radius / 3) + 0.5
        d2 = sum((g - a) ** 2 for g, a in zip(grids, at)) / size**2
        field += float(rng.choice([-1, 1]) * rng.uniform(0.3, 1) * contrast) * np.exp(-d2)
    return np.clip(field, 0.2, None)


def _haze(
    rng: np.random.Generator, shape: tuple[int, ...], radius: float, n: int, level: float,
    anisotropy: float,
) -> np.ndarray:
    """Out-of-focus nuclei with no label: ``n`` blobs about ``radius`` in size, blurred by
    about their radius, peaking at up to ``level`` (float32, ``shape``)."""
    haze = np.zeros(shape, np.float32)
    at = (rng.uniform(0, 1, (n, len(shape))) * (np.array(shape) - 1)).astype(int)
    haze[tuple(at.T)] = rng.uniform(0.3, 1.0, n) * level
    sigma = radius * rng.uniform(0.6, 1.0)
    haze = ndi.gaussian_filter(haze, [sigma / anisotropy, sigma, sigma][-len(shape):])
    return haze * (level / max(float(haze.max()), 1e-6))


def synthetic_nuclei(
    shape: tuple[int, ...] = (256, 256),
    seed: int | np.random.Generator | None = None,
    style: NucleiStyle = NucleiStyle(),
    anisotropy: float = 1.0,
    axial_blur: float = 1.0,
) -> SyntheticImage:
    """A synthetic nuclei image of ``shape`` ((H, W), or (Z, H, W) for a 3D stack).

    ``anisotropy`` is the voxel size along z relative to y/x (3D only): a nucleus of radius r
    spans about 2r / anisotropy slices. ``axial_blur`` (3D only): the out-of-focus blur's
    extent along z relative to its extent in y/x, in the same physical units (a widefield or
    confocal microscope resolves 2-4x worse along its axis than across it): at 3 a nucleus's
    light reaches well beyond its ends in z, and a slice near an end shows a dim blob far
    wider than the nucleus's cross-section there.
    """
    if axial_blur <= 0:
        raise ValueError(f"axial_blur must be > 0, got {axial_blur}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    ndim = len(shape)
    if ndim not in (2, 3):
        raise ValueError(f"shape must be (H, W) or (Z, H, W), got {shape}")
    r_lo, r_hi = style.radius
    r_lo = max(2.0, r_lo)
    r_hi = max(r_lo, min(r_hi, min(shape[-2:]) / 4))
    mean_r = _draw(rng, (r_lo, r_hi))
    spread = rng.uniform(0.05, 0.4) * mean_r  # size spread inside this image
    coverage = _draw(rng, style.coverage)
    area = float(np.prod(shape[-2:]))
    n = max(1, int(coverage * area / (np.pi * mean_r**2)))
    wide = {f: (_draw(rng, getattr(style, f)) if max(getattr(style, f)) > 0 else 0.0)
            for f in ("lobes", "contact", "brightness_spread", "nucleoli", "haze")}  # fmt: skip
    centres, pressed = _centres(rng, shape, n, mean_r, _draw(rng, style.cluster_fraction),
                                wide["contact"])  # fmt: skip

    labels = np.zeros(shape, np.int32)
    signal = np.zeros(shape, np.float32)
    texture_field = _smooth_field(rng, shape, sigma=max(1.0, mean_r / 5))
    scale = np.array([anisotropy, 1.0, 1.0])[-ndim:]
    max_hidden = _draw(rng, style.hidden)
    drawn = np.zeros(n + 1, np.int64)  # each nucleus's pixels when drawn
    visible = np.zeros(n + 1, np.int64)  # and those not covered since
    for i, centre in enumerate(centres, start=1):
        r_minor = float(np.clip(rng.normal(mean_r, spread), r_lo, r_hi))
        r_major = r_minor * _draw(rng, style.elongation)
        axes = np.array([r_minor, r_major, r_minor])[-ndim:] if ndim == 3 else np.array(
            [r_minor, r_major]
        )
        theta = rng.uniform(0, np.pi)  # in-plane rotation
        lobes = None
        if wide["lobes"] > 0:
            lobes = np.stack([rng.uniform(0, wide["lobes"], 4) / np.arange(1, 5),
                              rng.uniform(0, 2 * np.pi, 4)], axis=1)  # fmt: skip
        for _ in range(PLACEMENT_TRIES):
            placed = _ellipse(centre, axes, theta, scale, shape, lobes)
            if placed is None:
                break
            box, dist2 = placed
            inside = dist2 <= 1.0
            if pressed[i - 1]:  # fills the space its neighbours leave: covers none of them
                inside &= labels[box] == 0
            covered = np.bincount(labels[box][inside], minlength=n + 1)
            covered[0] = 0
            if not np.any(drawn - visible + covered > max_hidden * drawn):
                break
            # Hides too much of an earlier nucleus: step away from those it covers.
            hidden = np.nonzero(covered)[0]
            away = centre - np.average(centres[hidden - 1], axis=0, weights=covered[hidden])
            centre = centre + away / (np.linalg.norm(away) + 1e-8) * 0.3 * r_minor
        else:
            placed = None
        if placed is None:
            continue
        centres[i - 1] = centre
        visible -= covered
        drawn[i] = visible[i] = int(inside.sum())
        brightness = _draw(rng, style.brightness)
        if wide["brightness_spread"] > 0:
            brightness *= float(np.clip(np.exp(rng.normal(0, wide["brightness_spread"])), 0.1, 2.5))
        texture = _draw(rng, style.texture)
        profile = np.clip(1.0 - dist2, 0, 1) ** 0.3  # flat top, soft rim
        value = brightness * profile * (1 + texture * texture_field[box])
        if wide["nucleoli"] > 0:
            value = value * _nucleoli(rng, box, centre, r_minor, scale, wide["nucleoli"])
        labels[box][inside] = i
        signal[box][inside] = np.maximum(value[inside], 0.05 * brightness)

    blur = _draw(rng, style.blur)
    if blur > 0:
        signal = ndi.gaussian_filter(signal, [blur * axial_blur / anisotropy, blur, blur][-ndim:])
    if wide["haze"] > 0:
        signal = signal + _haze(rng, shape, mean_r, max(n // 2, 1), wide["haze"], anisotropy)
    illum = 1 + _draw(rng, style.illumination) * _smooth_field(rng, shape, max(shape) / 4) / 2
    image = (signal + _draw(rng, style.background)) * np.clip(illum, 0.2, None)
    image = np.clip(image / max(float(image.max()), 1e-6), 0, 1) ** _draw(rng, style.gamma)
    photons = _draw(rng, style.photons)
    image = rng.poisson(image * photons).astype(np.float32) / photons
    image += rng.normal(0, _draw(rng, style.read_noise), shape).astype(np.float32)
    # Renumber: ids 1..n of the nuclei that remain visible.
    shown = np.unique(labels[labels > 0])
    lut = np.zeros(n + 1, np.int32)
    lut[shown] = np.arange(1, len(shown) + 1)
    image16 = np.clip(image * 20000 + 300, 0, 65535).astype(np.uint16)
    return SyntheticImage(image=image16, labels=lut[labels])
