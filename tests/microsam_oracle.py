"""micro-sam's instance decoder, importable here without micro-sam's heavy dependencies.

micro-sam (``micro_sam``) and torch_em are installed unchanged with ``--no-deps`` (Makefile,
dev install): their decoder code needs only torch, but their package imports reach for
``elf``, ``bioimage_cpp``, ``nifty`` and vigra (compiled, not on the package index for this
platform or multi-GB through torchvision's CUDA torch). So:

- torch_em's ``model/unetr.py`` is imported as a submodule of bare ``torch_em`` /
  ``torch_em.model`` packages (their ``__init__`` files, which import the data loaders and
  trainer, are not run; ``unetr.py`` itself imports only ``model/unet.py``, ``vit.py`` and
  ``util.py``);
- micro-sam's own ``get_unetr`` / ``get_decoder`` / ``DecoderAdapter`` are taken from its
  ``instance_segmentation.py`` source, unchanged, and compiled beside the names they use
  (``UNETR``, ``torch``, ``util.get_device``), because importing that module pulls elf and
  bioimage_cpp.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
import types
import warnings
from collections import OrderedDict
from functools import cache
from pathlib import Path
from typing import Optional, Union

import torch

#: micro-sam's AIS decoder functions, by name, in its ``instance_segmentation.py``
MICRO_SAM_NAMES = ("DecoderAdapter", "get_unetr", "get_decoder")


def _bare_package(name: str) -> None:
    """Register package ``name`` (its real folder) without running its ``__init__``."""
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError(f"{name} is not installed (Makefile: the dev install step)")
    module = types.ModuleType(name)
    module.__path__ = list(spec.submodule_search_locations)
    module.__spec__ = spec  # so that find_spec(name) still answers later in the process
    sys.modules[name] = module


@cache
def torch_em_unetr() -> types.ModuleType:
    """torch_em's ``torch_em.model.unetr`` module."""
    try:
        return importlib.import_module("torch_em.model.unetr")
    except ImportError:
        for name in [m for m in sys.modules if m.split(".")[0] == "torch_em"]:
            del sys.modules[name]
    _bare_package("torch_em")
    _bare_package("torch_em.model")
    return importlib.import_module("torch_em.model.unetr")


@cache
def micro_sam_decoder_api() -> types.SimpleNamespace:
    """micro-sam's ``get_unetr``, ``get_decoder`` and ``DecoderAdapter``, as micro-sam wrote
    them; ``device=None`` resolves to the CPU."""
    spec = importlib.util.find_spec("micro_sam")
    if spec is None or spec.origin is None:
        raise ImportError("micro_sam is not installed (Makefile: the dev install step)")
    source_path = Path(spec.origin).parent / "instance_segmentation.py"
    tree = ast.parse(source_path.read_text(), filename=str(source_path))
    wanted = [
        node for node in tree.body
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and node.name in MICRO_SAM_NAMES
    ]  # fmt: skip
    found = {node.name for node in wanted}
    if found != set(MICRO_SAM_NAMES):
        raise ImportError(f"micro-sam no longer defines {set(MICRO_SAM_NAMES) - found}")
    namespace = {
        "torch": torch,
        "warnings": warnings,
        "OrderedDict": OrderedDict,
        "Optional": Optional,
        "Union": Union,
        "UNETR": torch_em_unetr().UNETR,
        "util": types.SimpleNamespace(get_device=lambda d=None: torch.device(d or "cpu")),
    }
    module = ast.Module(body=wanted, type_ignores=[])
    code = compile(module, str(source_path), "exec", dont_inherit=True)
    exec(code, namespace)  # micro-sam's code, unchanged
    return types.SimpleNamespace(**{name: namespace[name] for name in MICRO_SAM_NAMES})


# --- AIS post-processing: torch_em's seeded watershed, micro-sam's ``generate`` -------------


def _compile_from_source(path: Path, names: tuple[str, ...], namespace: dict) -> dict:
    """The top-level functions ``names`` of the module at ``path`` (and, for
    ``"Class.method"``, a method), compiled unchanged into ``namespace``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    nodes = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            nodes[node.name] = node
        elif isinstance(node, ast.ClassDef):
            for sub in node.body:
                if isinstance(sub, ast.FunctionDef):
                    nodes[f"{node.name}.{sub.name}"] = sub
    missing = set(names) - set(nodes)
    if missing:
        raise ImportError(f"{path.name} no longer defines {missing}")
    module = ast.Module(body=[nodes[name] for name in names], type_ignores=[])
    exec(compile(module, str(path), "exec", dont_inherit=True), namespace)  # their code, unchanged
    return namespace


def _package_file(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError(f"{package} is not installed (Makefile: the dev install step)")
    return Path(next(iter(spec.submodule_search_locations))) / relative


def vigra_gaussian_standin(image, sigma):
    """Stand-in for bioimage_cpp's / elf's (vigra's) ``gaussian_smoothing``: scipy, kernel cut at
    3 sigma, mirrored borders. NOT independent of our implementation (the same scipy call)."""
    import numpy as np
    from scipy import ndimage

    return ndimage.gaussian_filter(np.asarray(image, dtype=np.float32), sigma, mode="mirror",
                                   truncate=3.0)  # fmt: skip


@cache
def micro_sam_ais_generate():
    """micro-sam's ``InstanceSegmentationWithDecoder.generate`` (untiled path) over torch_em's
    ``watershed_from_center_and_boundary_distances`` and ``size_filter``, all three compiled from
    their sources unchanged. Returns ``generate(foreground, center, boundary, **kwargs)`` ->
    (H, W) labels.

    bioimage_cpp (and elf / vigra behind micro-sam's foreground smoothing) is not installed, so
    its three primitives are stand-ins: Gaussian smoothing -> scipy (``vigra_gaussian_standin``),
    ``label`` -> ``scipy.ndimage.label`` (4-connected), ``watershed`` -> skimage's seeded
    watershed, ``relabel_sequential`` -> skimage's. The thresholds, seed logic, masking, order
    of steps, defaults and size filter are torch_em's / micro-sam's own code.
    """
    from typing import Any

    import numpy as np
    from scipy import ndimage
    from skimage.segmentation import relabel_sequential, watershed

    bic = types.SimpleNamespace(
        filters=types.SimpleNamespace(gaussian_smoothing=vigra_gaussian_standin),
        segmentation=types.SimpleNamespace(
            label=lambda mask: ndimage.label(mask)[0],
            watershed=lambda hmap, markers, mask: watershed(hmap, markers=markers, mask=mask),
            relabel_sequential=lambda seg, offset=1: relabel_sequential(seg, offset=offset),
        ),
    )
    torch_em_ns = _compile_from_source(
        _package_file("torch_em", "util/segmentation.py"),
        ("size_filter", "watershed_from_center_and_boundary_distances"),
        {"np": np, "Optional": Optional, "List": list, "bic": bic},
    )
    micro_ns = _compile_from_source(
        _package_file("micro_sam", "instance_segmentation.py"),
        ("_apply_smoothing", "InstanceSegmentationWithDecoder.generate"),
        {
            "np": np, "Optional": Optional, "Union": Union, "Tuple": tuple, "List": list,
            "Dict": dict, "Any": Any, "zarr": types.SimpleNamespace(Array=type(None)),
            "filter_impl": types.SimpleNamespace(gaussian_smoothing=vigra_gaussian_standin),
            "watershed_from_center_and_boundary_distances":
                torch_em_ns["watershed_from_center_and_boundary_distances"],
        },
    )  # fmt: skip
    method = micro_ns["generate"]

    def generate(foreground, center_distances, boundary_distances, **kwargs):
        state = types.SimpleNamespace(
            is_initialized=True, _foreground=foreground, _center_distances=center_distances,
            _boundary_distances=boundary_distances,
        )  # fmt: skip
        return method(state, **kwargs)

    return generate


@cache
def torch_em_distance_targets():
    """torch_em's ``PerObjectDistanceTransform`` (micro-sam's AIS training targets), its
    ``__init__``, ``compute_normalized_object_distances`` and ``__call__`` compiled from source
    unchanged into a class. Returns ``transform(labels)`` -> (3, H, W) float32 with micro-sam's
    settings (foreground, centre distance, boundary distance).

    bioimage_cpp is not installed; its primitives are stand-ins: ``distance_transform`` ->
    scipy's exact Euclidean distance transform, ``vector_difference_transform`` -> the vector
    to the nearest zero pixel from scipy's ``return_indices``, ``label`` ->
    ``scipy.ndimage.label``, ``relabel_sequential`` -> skimage's. The centres, boundaries,
    normalisation and fill values are torch_em's own code.
    """
    import numpy as np
    import skimage
    import skimage.measure
    import skimage.segmentation
    from scipy import ndimage
    from skimage.segmentation import relabel_sequential

    def vector_difference(mask, sampling=None):
        _, index = ndimage.distance_transform_edt(mask, sampling=sampling, return_indices=True)
        grid = np.indices(mask.shape)
        return np.moveaxis(index - grid, 0, -1).astype(np.float32)  # (..., ndim)

    bic = types.SimpleNamespace(
        distance=types.SimpleNamespace(
            distance_transform=lambda mask, sampling=None: ndimage.distance_transform_edt(
                mask, sampling=sampling).astype(np.float32),
            vector_difference_transform=vector_difference,
        ),
        segmentation=types.SimpleNamespace(
            label=lambda seg: ndimage.label(seg)[0],
            relabel_sequential=lambda seg, offset=1: relabel_sequential(seg, offset=offset),
        ),
    )
    names = tuple(f"PerObjectDistanceTransform.{m}" for m in
                  ("__init__", "compute_normalized_object_distances", "__call__"))
    ns = _compile_from_source(
        _package_file("torch_em", "transform/label.py"), names,
        {"np": np, "bic": bic, "skimage": skimage, "Optional": Optional, "Tuple": tuple},
    )  # fmt: skip
    transform_class = type("PerObjectDistanceTransform", (), {
        "eps": 1e-7, "__init__": ns["__init__"], "__call__": ns["__call__"],
        "compute_normalized_object_distances": ns["compute_normalized_object_distances"],
    })  # fmt: skip
    return transform_class(distances=True, boundary_distances=True, foreground=True,
                           apply_label=False)  # fmt: skip


@cache
def micro_sam_point_prompts():
    """micro-sam's ``_derive_point_prompts`` (APG's prompts from the decoder's maps) and its
    ``_get_centers``, compiled from ``instance_segmentation.py`` unchanged. Returns
    ``derive(foreground, center_distances, boundary_distances, **thresholds)`` -> its dict
    (``points`` (N, 1, 2) as (x, y), ``point_labels``) or None.

    elf's ``parallel`` (blockwise distance transform and labelling) is not installed; its two
    calls are stand-ins: ``distance_transform`` -> scipy's exact Euclidean distance transform
    (elf's is exact too, blockwise with a halo), ``label`` -> ``scipy.ndimage.label``
    (4-connected, as elf's default).
    """
    import numpy as np
    from scipy import ndimage
    from skimage.measure import regionprops
    from skimage.segmentation import find_boundaries

    def label(mask, out=None, block_shape=None):
        out[...] = ndimage.label(mask)[0]
        return out

    parallel_impl = types.SimpleNamespace(
        distance_transform=lambda mask, halo=None, block_shape=None:
            ndimage.distance_transform_edt(mask),
        label=label,
    )  # fmt: skip
    ns = _compile_from_source(
        _package_file("micro_sam", "instance_segmentation.py"),
        ("_get_centers", "_derive_point_prompts"),
        {"np": np, "parallel_impl": parallel_impl, "find_boundaries": find_boundaries,
         "regionprops": regionprops},
    )  # fmt: skip
    return ns["_derive_point_prompts"]
