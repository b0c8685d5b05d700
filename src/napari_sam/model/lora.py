"""Low-rank adapters (LoRA) on a model's linear layers, and their merge back into plain
weights.

:func:`add_lora` wraps chosen ``nn.Linear`` layers in :class:`LoRALinear`: the layer stays
frozen and a rank-``r`` update ``up @ down`` (``up`` starts at zero, so the model starts
unchanged) is learned beside it. :func:`merge_lora` folds each update into its layer's
weight and puts the plain ``nn.Linear`` back, so the state dict has the official keys again
and the adapted model saves and loads like any other.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class LoRALinear(nn.Module):
    """``base(x) + scale * up(down(x))``; ``base`` frozen.

    ``down``: (rank, in_features), Kaiming-uniform; ``up``: (out_features, rank), zeros;
    ``scale`` = ``alpha / rank``.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float | None = None) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"a LoRA rank is at least 1, got {rank}")
        self.base = base
        base.requires_grad_(False)
        weight = base.weight
        self.down = nn.Parameter(torch.empty(rank, base.in_features, dtype=weight.dtype,
                                             device=weight.device))  # fmt: skip
        nn.init.kaiming_uniform_(self.down, a=math.sqrt(5))
        self.up = nn.Parameter(torch.zeros(base.out_features, rank, dtype=weight.dtype,
                                           device=weight.device))  # fmt: skip
        self.scale = (rank if alpha is None else alpha) / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        return self.base(x) + F.linear(F.linear(x, self.down), self.up) * self.scale

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """The plain layer with the update folded into its weight."""
        self.base.weight += (self.up @ self.down) * self.scale
        return self.base


def add_lora(module: nn.Module, rank: int, names: tuple[str, ...] = ("qkv",)) -> list[nn.Parameter]:
    """Wrap every ``nn.Linear`` of ``module`` whose attribute name is in ``names`` (e.g. the
    attention projections ``qkv``) in a :class:`LoRALinear`; returns the new trainable
    parameters. Raises ``ValueError`` when no layer has such a name."""
    params: list[nn.Parameter] = []
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if name in names and isinstance(child, nn.Linear):
                wrapped = LoRALinear(child, rank)
                setattr(parent, name, wrapped)
                params += [wrapped.down, wrapped.up]
    if not params:
        raise ValueError(f"{type(module).__name__} has no linear layer named {names}")
    return params


def merge_lora(module: nn.Module) -> int:
    """Fold every :class:`LoRALinear` of ``module`` back into a plain ``nn.Linear`` (in
    place); returns how many there were."""
    count = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LoRALinear):
                setattr(parent, name, child.merged())
                count += 1
    return count
