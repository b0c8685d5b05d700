"""Find similar (``napari_sam.automatic.similar``) from 3 example nuclei, bundled model: on
``../shared/foreign`` 2D beside our generator's held-out images, in one run.

Per image and per draw of 3 examples (2 draws, seeds 0 and 1): F1@0.5 of the objects found
against the nuclei that are not examples, and seconds per image once its embeddings are
cached (their tiles embedded before the clock starts). Rows: the default (the likeness map's
prompts and the instance decoder's seeds), the likeness map's prompts alone, and, as the
reference without the feature, ``segment_everything`` (APG, the model's defaults; every
nucleus, examples left out of the count). Then two kinds of nuclei in one image
(``napari_sam.testing.two_kinds``: large dim, small bright): examples of one kind, the
precision (found objects of that kind / found) and recall.

    .venv/bin/python benchmarks/bench_similar.py [--threads 2]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
import torch
from bench_auto import f1_from, match_counts
from bench_foreign import DEFAULT_FOREIGN, cpu_line, foreign_2d, ours_2d

from napari_sam.automatic import segment_everything
from napari_sam.automatic.run import plane_embeddings
from napari_sam.automatic.similar import find_similar, similar_settings
from napari_sam.predictor import Predictor
from napari_sam.testing import two_kinds


def cached(predictor, image, settings):
    """Embeddings of ``image`` as find similar tiles it, every tile embedded already."""
    embeddings = plane_embeddings(predictor, image, settings.magnification)
    for tile in embeddings.grid.tiles:
        embeddings.get(0, tile.index)
    return embeddings


def draws(truth: np.ndarray, n: int = 3, seeds=(0, 1)):
    for seed in seeds:
        ids = np.random.default_rng(seed).choice(np.unique(truth[truth > 0]), n, replace=False)
        yield np.where(np.isin(truth, ids), truth, 0)


def similar_row(predictor, images, settings) -> tuple[float, float]:
    counts, seconds = [], []
    for image, truth in images:
        embeddings = cached(predictor, image, settings)
        for committed in draws(truth):
            t0 = time.perf_counter()
            found = find_similar(predictor, image, committed, settings=settings,
                                 embeddings=embeddings)  # fmt: skip
            seconds.append(time.perf_counter() - t0)
            counts.append(match_counts(found, np.where(committed > 0, 0, truth)))
    return f1_from(counts), float(np.median(seconds))


def reference_row(predictor, images) -> tuple[float, float]:
    counts, seconds = [], []
    for image, truth in images:
        for committed in draws(truth):
            t0 = time.perf_counter()
            found = segment_everything(predictor, image)
            seconds.append(time.perf_counter() - t0)
            found = np.where(np.isin(found, np.unique(found[committed > 0])), 0, found)
            counts.append(match_counts(found, np.where(committed > 0, 0, truth)))
    return f1_from(counts), float(np.median(seconds))


#: the two kinds of napari_sam.testing.two_kinds
KINDS = ((0, "large dim"), (1, "small bright"))


def two_kinds_counts(predictor, settings, kind: int, seeds=(0, 1, 2)) -> tuple[int, int, int]:
    """Examples of one ``kind`` (3 per scene): (found objects of that kind, found objects,
    objects of that kind), summed over the scenes of ``seeds``."""
    tp = n_found = n_kind = 0
    for seed in seeds:
        scene = two_kinds(seed=seed)
        ids = [i for i, k in scene.kinds.items() if k == kind][:3]
        committed = np.where(np.isin(scene.labels, ids), scene.labels, 0)
        found = find_similar(predictor, scene.image, committed, settings=settings)
        wanted = [i for i, k in scene.kinds.items() if k == kind and i not in ids]
        m, f, t = match_counts(found, np.where(np.isin(scene.labels, wanted), scene.labels, 0))
        tp, n_found, n_kind = tp + m, n_found + f, n_kind + t
    return tp, n_found, n_kind


def two_kinds_rows(predictor, settings) -> None:
    print(f"\n{'two kinds: examples of':<28}{'precision':>10}{'recall':>8}{'found':>7}")
    for kind, name in KINDS:
        tp, n_found, n_kind = two_kinds_counts(predictor, settings, kind)
        print(f"{name:<28}{tp / max(n_found, 1):>10.3f}{tp / max(n_kind, 1):>8.3f}{n_found:>7}")


def setup(parser: argparse.ArgumentParser):
    """``parser``'s arguments (``--threads`` added), the bundled model and its find-similar
    settings, after printing the CPU line: ``(args, predictor, settings)``."""
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    predictor = Predictor.load("bundled", device="cpu")
    print(cpu_line())
    return args, predictor, similar_settings(predictor)


def main() -> None:
    _args, predictor, default = setup(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    rows = {"find similar (default)": lambda d: similar_row(predictor, d, default),
            "likeness prompts only": lambda d: similar_row(
                predictor, d, replace(default, decoder_seeds=False)),
            "reference: APG, all objects": lambda d: reference_row(predictor, d)}  # fmt: skip
    data = {"foreign": foreign_2d(DEFAULT_FOREIGN), "ours": ours_2d()}
    print(f"3 examples per image, 2 draws; magnification {default.magnification:g}")
    print(f"{'':<30}{'F1 foreign':>11}{'s/img':>7}{'F1 ours':>9}{'s/img':>7}")
    for name, row in rows.items():
        (f_foreign, s_foreign), (f_ours, s_ours) = row(data["foreign"]), row(data["ours"])
        print(f"{name:<30}{f_foreign:>11.3f}{s_foreign:>7.2f}{f_ours:>9.3f}{s_ours:>7.2f}",
              flush=True)  # fmt: skip
    two_kinds_rows(predictor, default)


if __name__ == "__main__":
    main()
