"""Checkpoints: read any published SAM weights file safely, tell its architecture, load it.

Formats read by :func:`read_state_dict` (see ``docs``/MODELS.md):

- official SAM and MobileSAM: a plain ``{key: tensor}`` state dict; MobileSAM's unused
  classifier head (``image_encoder.norm_head.*``, ``image_encoder.head.*``) is dropped;
- training-framework files (micro-sam): ``{"model_state": {"sam.<key>": tensor}, ...}``,
  possibly with pickled configs / classes beside it: the ``sam.`` prefix is stripped, and
  the file is unpickled by :mod:`napari_sam.model.safe_pickle`, which never runs its code.

``torch.load(weights_only=True)`` is tried first; only files it refuses go to the
restricted unpickler. Loading into a model is strict (every key and shape must agree).
When neither can read a file, the error says why in torch's words but without torch's advice
to re-run ``torch.load`` with ``weights_only=False`` or to allowlist globals: that would run
the file's pickled code.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from napari_sam.model import safe_pickle
from napari_sam.model.config import REGISTRY, SamConfig, get_config
from napari_sam.model.download import (
    WEIGHTS,
    ProgressCallback,
    WeightsError,
    fetch_weights,
    file_xxh128,
)
from napari_sam.model.sam import Sam, build_sam

if TYPE_CHECKING:
    from torch import nn

    from napari_sam.model.instance_decoder import InstanceDecoder

StateDict = dict[str, torch.Tensor]
Shapes = dict[str, tuple[int, ...]]

#: Key prefixes present in published files that no SAM model uses (MobileSAM's classifier).
DROPPED_PREFIXES = ("image_encoder.norm_head.", "image_encoder.head.")
#: The key of a wrapped file (``{"model_state": ...}``) that holds napari-sam's settings for
#: these weights: ``{"auto_multimask": [[family, mode], ...]}`` (strings only; see
#: ``napari_sam.training.adapt.Adapted.save``).
SETTINGS_KEY = "napari_sam"
#: BatchNorm counters: not needed at inference, absent from some files; optional both ways.
OPTIONAL_SUFFIX = "num_batches_tracked"
_LIST_LIMIT = 8


class CheckpointError(WeightsError):
    """A weights file cannot be read, or its contents are not a SAM state dict."""


class StateDictMismatchError(CheckpointError):
    """A state dict does not fit a model: lists missing / unexpected keys and bad shapes."""


class ArchitectureError(CheckpointError):
    """No registered architecture (or not the expected one) matches a state dict."""


@dataclass(frozen=True)
class LoadedModel:
    """A SAM model in eval mode with where it came from.

    ``weights_hash`` is the xxh128 of the weights file, however it was named: embedding
    caches put it in their signature so features of other weights are never served. (A fast
    content identity; downloads are checked against SHA-256 before this.)
    """

    model: Sam
    name: str
    architecture: str
    weights_hash: str
    path: Path
    #: the instance decoder of automatic instance segmentation, when the weights have one
    decoder: InstanceDecoder | None = None

    @property
    def config(self) -> SamConfig:
        """The architecture's configuration."""
        return self.model.config


def read_state_dict(path: str | os.PathLike) -> StateDict:
    """The normalised SAM state dict in a weights file (CPU tensors, official key names)."""
    path = Path(path)
    return _sam_state(_unpickle(path), path)


def _sam_state(obj: object, path: Path) -> StateDict:
    """The SAM state dict in an unpickled weights file ``obj`` (read from ``path``)."""
    state = obj
    if isinstance(obj, Mapping):
        for wrapper in ("model_state", "state_dict"):
            if isinstance(obj.get(wrapper), Mapping):
                state = obj[wrapper]
                break
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError(f"{path} holds no state dict (found {type(obj).__name__})")
    not_tensors = [str(k) for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(
            f"{path} is not a SAM state dict: entries that are not tensors: "
            f"{_trim(not_tensors)}"
        )
    return normalise_state_dict(state)


def _with_settings(config: SamConfig, obj: object, path: Path) -> SamConfig:
    """``config`` with the settings a wrapped file carries under :data:`SETTINGS_KEY`."""
    from napari_sam.predictor import CANDIDATES, MULTIMASK_MODES

    settings = obj.get(SETTINGS_KEY) if isinstance(obj, Mapping) else None
    if settings is None:
        return config
    pairs = settings.get("auto_multimask") if isinstance(settings, Mapping) else None
    try:
        auto = tuple((str(f), str(m)) for f, m in pairs)
    except (TypeError, ValueError):
        auto = None
    if auto is None or any(m not in MULTIMASK_MODES + CANDIDATES or m == "auto" for _, m in auto):
        raise CheckpointError(f"{path}: unreadable {SETTINGS_KEY!r} settings: {settings!r}")
    return replace(config, auto_multimask=auto)


def normalise_state_dict(state: Mapping[str, torch.Tensor]) -> StateDict:
    """Official key names: strip a training wrapper's ``sam.`` prefix, drop unused heads."""
    keys = list(state)
    strip = bool(keys) and all(k.startswith("sam.") for k in keys)
    out: StateDict = {}
    for key, value in state.items():
        name = key.removeprefix("sam.") if strip else key
        if not name.startswith(DROPPED_PREFIXES):
            out[name] = value
    return out


def _unpickle(path: Path) -> object:
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as first:
        try:
            return torch.load(
                path, map_location="cpu", weights_only=False, pickle_module=safe_pickle
            )
        except Exception as exc:
            raise CheckpointError(
                f"cannot read weights file {path}: {torch_error_reason(exc)} (torch's "
                f"weights-only loader: {torch_error_reason(first)}); is it a complete "
                f"PyTorch checkpoint?"
            ) from None


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
#: Sentences of torch's load errors that advise running or allowlisting the file's code.
_ADVICE = re.compile(
    r"weights_only|can still be loaded|trusted source|trust the source|safe_globals"
    r"|arbitrary code|file an issue", re.IGNORECASE,
)
_REASON_MARK = "WeightsUnpickler error:"


def torch_error_reason(exc: BaseException) -> str:
    """``Type: reason`` of a ``torch.load`` error in one line, torch's advice left out.

    torch's weights-only refusal reads "Weights only load failed. ... Re-running
    ``torch.load`` with ``weights_only`` set to ``False`` will likely succeed ...
    WeightsUnpickler error: <reason> Please use ``add_safe_globals`` ...": only the reason
    is kept. Every sentence that suggests unpickling with ``weights_only=False`` or
    allowlisting globals is dropped, and at most the first two others are kept.
    """
    text = _ANSI.sub("", str(exc))
    if _REASON_MARK in text:
        text = text.split(_REASON_MARK, 1)[1]
    sentences = [
        sentence
        for line in text.splitlines()
        for sentence in re.split(r"(?<=\.)\s+", line.strip())
        if sentence and not _ADVICE.search(sentence)
    ]
    reason = " ".join(sentences[:2])
    return f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__


def _trim(items: list[str]) -> str:
    shown = ", ".join(items[:_LIST_LIMIT])
    more = len(items) - _LIST_LIMIT
    return shown + (f", ... and {more} more" if more > 0 else "")


def shapes_of(state: Mapping[str, torch.Tensor]) -> Shapes:
    """``{key: shape}`` of a state dict, ignoring the optional BatchNorm counters."""
    return {k: tuple(v.shape) for k, v in state.items() if not k.endswith(OPTIONAL_SUFFIX)}


def state_dict_differences(expected: Shapes, found: Shapes) -> list[str]:
    """Human-readable differences between two ``{key: shape}`` maps; empty if they agree."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [
        f"{k}: file {found[k]} vs model {expected[k]}"
        for k in expected
        if k in found and found[k] != expected[k]
    ]
    out = []
    if missing:
        out.append(f"{len(missing)} missing keys: {_trim(missing)}")
    if unexpected:
        out.append(f"{len(unexpected)} unexpected keys: {_trim(unexpected)}")
    if shapes:
        out.append(f"{len(shapes)} shape mismatches: {_trim(shapes)}")
    return out


@cache
def expected_shapes(config: SamConfig) -> Shapes:
    """``{key: shape}`` of the model ``config`` builds (built on the meta device: no memory)."""
    with torch.device("meta"):
        model = build_sam(config)
    return shapes_of(model.state_dict())


def detect_architecture(
    state: Mapping[str, torch.Tensor], candidates: Mapping[str, SamConfig] | None = None
) -> str:
    """Name of the registered architecture whose keys and shapes all match ``state``.

    Every configuration in ``candidates`` (default: the registry, so our own small models
    too) is compared key by key and shape by shape. This contains MODELS.md's rule (patch
    embedding width 768 / 1024 / 1280 -> vit_b / l / h; ``patch_embed.seq.0.c.weight`` ->
    vit_t) and catches files that fit it only half. Raises :class:`ArchitectureError`
    naming the closest architecture and how the file differs from it.
    """
    candidates = REGISTRY if candidates is None else candidates
    found = shapes_of(state)
    best: tuple[int, str, list[str]] | None = None
    for name, config in candidates.items():
        expected = expected_shapes(config)
        diff = state_dict_differences(expected, found)
        if not diff:
            return name
        score = len(set(expected) ^ set(found)) + sum(
            expected[k] != found[k] for k in set(expected) & set(found)
        )
        if best is None or score < best[0]:
            best = (score, name, diff)
    if best is None:
        raise ArchitectureError("no architectures to compare with")
    raise ArchitectureError(
        f"the weights match no known architecture ({', '.join(candidates)}); closest is "
        f"{best[1]}, which differs: {'; '.join(best[2])}"
    )


def load_weights_into(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Copy ``state`` into ``model`` strictly; :class:`StateDictMismatchError` if they differ.

    Only BatchNorm ``num_batches_tracked`` counters may be absent from (or extra in) the file.
    """
    own = model.state_dict()
    diff = state_dict_differences(shapes_of(own), shapes_of(state))
    if diff:
        raise StateDictMismatchError(
            f"the weights do not fit {type(model).__name__}: {'; '.join(diff)}"
        )
    state = {k: v for k, v in state.items() if k in own}
    for key in own:
        if key.endswith(OPTIONAL_SUFFIX) and key not in state:
            state[key] = own[key]
    model.load_state_dict(state, strict=True)


def load_model(
    source: str | os.PathLike,
    device: str | torch.device = "cpu",
    progress: ProgressCallback | None = None,
    decoder: str | os.PathLike | None = None,
) -> LoadedModel:
    """A SAM model in eval mode from registered weights (fetched if needed) or a file, with
    its instance decoder when it has one.

    ``source`` is a name of :data:`napari_sam.model.download.WEIGHTS` or the path of a
    weights file, whose architecture is then detected. The instance decoder comes from
    ``decoder`` (a file: micro-sam's layout or a decoder state dict alone) when given, else
    from the weights file itself (micro-sam's ``decoder_state``), else, for registered
    weights, from the decoder file registered beside them (``WeightsInfo.decoder_filename``)
    when it is there. ``progress(done_bytes, total_bytes)`` reports a download. Raises
    :class:`FileNotFoundError` for an unknown name / missing file,
    :class:`~napari_sam.model.download.WeightsError` subclasses otherwise.
    """
    from napari_sam.model.instance_decoder import (
        build_instance_decoder,
        decoder_state_of,
        load_instance_decoder,
    )

    info = WEIGHTS.get(source) if isinstance(source, str) else None
    if info is not None:
        path = fetch_weights(info, progress)
        architecture, name = info.architecture, info.name
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(
                f"{str(source)!r} is neither a weights file nor a known weights name "
                f"({', '.join(WEIGHTS)})"
            )
        architecture, name = None, path.stem
    obj = _unpickle(path)
    state = _sam_state(obj, path)
    architecture = architecture or detect_architecture(state)
    digest = file_xxh128(path)
    config = _with_settings(get_config(architecture), obj, path)
    model = build_sam(config)
    try:
        load_weights_into(model, state)
    except StateDictMismatchError as exc:
        raise StateDictMismatchError(f"{path} as {architecture}: {exc}") from None
    model.to(device).eval()
    beside = info.decoder_path() if info is not None else None
    if decoder is not None:
        instance_decoder = load_instance_decoder(decoder, config)
    elif (inside := decoder_state_of(obj, path)) is not None:
        instance_decoder = build_instance_decoder(config, inside)
    elif beside is not None and beside.is_file():
        instance_decoder = load_instance_decoder(beside, config)
    else:
        instance_decoder = None
    if instance_decoder is not None:
        instance_decoder.to(device)
    return LoadedModel(model, name, architecture, digest, path, instance_decoder)
