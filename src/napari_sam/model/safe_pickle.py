"""A pickle module for ``torch.load`` that never runs code from the file.

Training frameworks (micro-sam's trainer) save ``{"model_state": ..., "config": <object>,
"optimizer_class": <class>, ...}``: ``torch.load(weights_only=True)`` refuses such files, and
plain ``torch.load`` would import and call whatever the file names. Here every global the
file references is looked up in a short allowlist (what tensors and state dicts are made
of); anything else becomes an inert :class:`Placeholder` subclass that records its arguments
and does nothing. So ``os.system``, ``exec``, a framework's config class: all are replaced by
placeholders, and the tensors come through.

Use: ``torch.load(path, weights_only=False, pickle_module=safe_pickle)``.
"""

from __future__ import annotations

import collections
import pickle
from typing import Any

import torch
import torch._utils

__all__ = ["Placeholder", "Unpickler", "load", "loads"]


class Placeholder:
    """Stands in for an object whose class the allowlist does not know. Does nothing."""

    pickled_global: str = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<placeholder for {self.pickled_global}>"


def _allowed() -> dict[tuple[str, str], Any]:
    allowed: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch", "Size"): torch.Size,
        ("torch", "device"): torch.device,
    }
    for name in ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_parameter"):
        allowed["torch._utils", name] = getattr(torch._utils, name)
    for name in dir(torch):
        if isinstance(getattr(torch, name, None), torch.dtype):
            allowed["torch", name] = getattr(torch, name)
    return allowed


_ALLOWED = _allowed()
_PLACEHOLDERS: dict[tuple[str, str], type[Placeholder]] = {}


def _placeholder(module: str, name: str) -> type[Placeholder]:
    key = (module, name)
    if key not in _PLACEHOLDERS:
        cls = type(name, (Placeholder,), {"pickled_global": f"{module}.{name}"})
        _PLACEHOLDERS[key] = cls
    return _PLACEHOLDERS[key]


class Unpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose globals come from the allowlist, else are placeholders."""

    def find_class(self, module: str, name: str) -> Any:
        found = _ALLOWED.get((module, name))
        return found if found is not None else _placeholder(module, name)


def load(file: Any, **kwargs: Any) -> Any:
    """``pickle.load`` with the restricted :class:`Unpickler`."""
    return Unpickler(file, **kwargs).load()


def loads(data: bytes, **kwargs: Any) -> Any:
    """``pickle.loads`` with the restricted :class:`Unpickler`."""
    import io

    return Unpickler(io.BytesIO(data), **kwargs).load()
