"""Choosing where and in which precision the model runs: CUDA, then Apple MPS, else CPU."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

import torch

DeviceName = Literal["auto", "cuda", "mps", "cpu"]
PrecisionName = Literal["auto", "fp32", "bf16", "fp16"]

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str = "auto") -> torch.device:
    """The torch device for ``name``; ``auto`` picks CUDA, then MPS, else the CPU.

    Raises ``ValueError`` when a device is asked for by name but is not available here.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but torch sees no CUDA GPU here")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' was asked for, but Apple MPS is not available here")
    if name not in ("cuda", "mps", "cpu"):
        raise ValueError(f"unknown device {name!r}; choose one of auto, cuda, mps, cpu")
    return torch.device(name)


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 matrix units (Intel AMX or AVX512-BF16).

    On other CPUs (AVX2 only, say) bf16 is emulated and slower than fp32.
    """
    flags: set[str] = set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                flags.update(line.split(":", 1)[1].split())
                break
    return bool({"amx_bf16", "avx512_bf16"} & flags)


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    """The compute dtype for ``name`` on ``device``.

    ``auto`` picks bf16 on CUDA GPUs that support it and on CPUs with AMX / AVX512-BF16,
    fp16 on MPS, else fp32. ``fp32`` forces full precision everywhere.
    """
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "mps":
            return torch.float16
        return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
    try:
        return _DTYPES[name]
    except KeyError:
        raise ValueError(
            f"unknown precision {name!r}; choose one of auto, fp32, bf16, fp16"
        ) from None
