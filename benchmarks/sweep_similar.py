"""Which find-similar settings suit the bundled model: F1@0.5 from 3 example nuclei on
``../shared/foreign`` 2D and on our generator's held-out images, and the two-kinds
precision, for one setting changed at a time from a base (then a few together); in one run,
today's default and the base first.

A default is chosen on both data sets together (ranked by the lower F1, with the two-kinds
precision >= 0.9), never on one alone. The base is :data:`BEFORE` (the settings the sweep
in docs/similar.md started from) or, with ``--base default``, today's defaults.

    .venv/bin/python benchmarks/sweep_similar.py [--threads 2] [--only 0,4,12] [--base before]
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from bench_foreign import DEFAULT_FOREIGN, foreign_2d, ours_2d
from bench_similar import KINDS, setup, similar_row, two_kinds_counts

#: the settings before this sweep chose today's defaults (docs/similar.md's table changes
#: these); ``--base default`` changes today's defaults instead
BEFORE: dict[str, float] = {"likeness_weight": 2.0, "min_distance": 0.6}

#: settings changed from the base, one at a time, then together
VARIANTS: tuple[dict[str, float], ...] = (
    {"size_tolerance": 4.0},
    {"size_tolerance": 6.0},
    {"min_contrast": 0.1},
    {"min_contrast": 0.0},
    {"likeness_weight": 1.0},
    {"likeness_weight": 4.0},
    {"min_distance": 0.4},
    {"min_distance": 0.9},
    {"background_quantile": 0.1},
    {"background_quantile": 0.35},
    {"nms_threshold": 0.35},
    {"min_free_fraction": 0.3},
    {"likeness_weight": 0.5},
    {"likeness_weight": 0.0},
    {"min_distance": 1.2},
    {"likeness_weight": 1.0, "min_distance": 0.9},
    {"likeness_weight": 0.5, "min_distance": 0.9},
    {"likeness_weight": 1.0, "min_distance": 1.2},
    {"likeness_weight": 1.0, "min_distance": 0.9, "min_contrast": 0.1},
    {"likeness_weight": 0.0, "min_distance": 0.9},
    {"likeness_weight": 0.0, "min_distance": 1.2},
    {"likeness_weight": 0.0, "min_contrast": 0.1},
    {"likeness_weight": 0.0, "nms_threshold": 0.35},
)


def name_of(change: dict[str, float]) -> str:
    """``change`` as a row name, e.g. 'likeness_weight 0, min_distance 0.9'."""
    return ", ".join(f"{k} {v:g}" for k, v in change.items())


def two_kinds_precision(predictor, settings) -> float:
    """The lower precision of the two kinds (examples of one kind find that kind)."""
    counts = (two_kinds_counts(predictor, settings, kind) for kind, _ in KINDS)
    return min(tp / max(n_found, 1) for tp, n_found, _ in counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="indices of VARIANTS (e.g. 12,13,15)")
    parser.add_argument("--base", choices=("before", "default"), default="before",
                        help="what the variants change: BEFORE (the table in docs/similar.md) "
                             "or today's defaults")  # fmt: skip
    args, predictor, default = setup(parser)
    picked = [int(i) for i in args.only.split(",")] if args.only else range(len(VARIANTS))
    chosen = [VARIANTS[i] for i in picked]
    data = {"foreign": foreign_2d(DEFAULT_FOREIGN), "ours": ours_2d()}
    print(f"{'setting':<44}{'F1 foreign':>11}{'F1 ours':>9}{'lower':>7}{'2-kinds prec':>13}"
          f"{'s/img':>7}")  # fmt: skip
    base = replace(default, **BEFORE) if args.base == "before" else default
    rows = [("default", default)]
    if args.base == "before":
        rows.append((f"before: {name_of(BEFORE)}", base))
    for name, settings in rows + [(name_of(c), replace(base, **c)) for c in chosen]:
        (f_for, s_for), (f_ours, _) = (similar_row(predictor, data[k], settings)
                                       for k in ("foreign", "ours"))  # fmt: skip
        precision = two_kinds_precision(predictor, settings)
        print(f"{name:<44}{f_for:>11.3f}{f_ours:>9.3f}{min(f_for, f_ours):>7.3f}"
              f"{precision:>13.3f}{s_for:>7.2f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
