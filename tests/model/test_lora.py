"""Low-rank adapters: a wrapped model starts out unchanged, and merging keeps what it
learned while giving back the official state dict keys."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from napari_sam.model.lora import LoRALinear, add_lora, merge_lora


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(8, 24)
        self.proj = nn.Linear(24, 8)

    def forward(self, x):
        return self.proj(self.qkv(x).relu())


def test_adapters_start_unchanged_and_merge_into_the_same_function():
    torch.manual_seed(0)
    model = nn.Sequential(Block(), Block())
    keys = set(model.state_dict())
    x = torch.randn(5, 8)
    before = model(x)
    params = add_lora(model, rank=2)
    assert len(params) == 4 and sum(isinstance(m, LoRALinear) for m in model.modules()) == 2
    torch.testing.assert_close(model(x), before)  # up starts at zero
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn_like(p) * 0.1)
    learned = model(x)
    assert not torch.allclose(learned, before)
    assert merge_lora(model) == 2
    assert set(model.state_dict()) == keys
    torch.testing.assert_close(model(x), learned, atol=1e-5, rtol=1e-5)


def test_a_model_without_such_layers_is_refused():
    with pytest.raises(ValueError, match="no linear layer named"):
        add_lora(nn.Sequential(nn.Linear(3, 3)), rank=2)
