"""Optimizer-state bytes of the cost table against hand counts on one linear layer."""

from __future__ import annotations

import torch

from mlorc_lab.methods import MethodOptions, build_method
from mlorc_lab.train.cost import optimizer_state_bytes

ROWS, COLUMNS = 64, 32
FP32 = 4


def _stepped(method: str, **overrides) -> object:
    generator = torch.Generator().manual_seed(0)
    model = torch.nn.Linear(COLUMNS, ROWS, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.randn(ROWS, COLUMNS, generator=generator))
    _, optimizer = build_method(method, model, MethodOptions(learning_rate=1e-3, rank=4, **overrides))
    model(torch.randn(8, COLUMNS, generator=generator)).square().mean().backward()
    optimizer.step()
    return optimizer


def test_adamw_state_bytes():
    # exp_avg and exp_avg_sq of the weight, plus the 0-d fp32 step counter.
    assert optimizer_state_bytes(_stepped("full-adamw")) == 2 * ROWS * COLUMNS * FP32 + FP32


def test_lion_state_bytes():
    # lion_pytorch keeps exp_avg only.
    assert optimizer_state_bytes(_stepped("full-lion")) == ROWS * COLUMNS * FP32


def test_mlorc_adamw_state_bytes():
    # Two moments as rank-4 factors U (64 x 4), S (4) and V (32 x 4); the weight is
    # large enough for the size rule to compress it.
    factors = (ROWS * 4 + 4 + COLUMNS * 4) * FP32
    optimizer = _stepped("mlorc-adamw")
    assert optimizer.is_compressed(optimizer.param_groups[0]["params"][0])
    assert optimizer_state_bytes(optimizer) == 2 * factors


class _Attention(torch.nn.Module):
    """One LLaMA-named projection, so that GaLore projects it."""

    def __init__(self) -> None:
        super().__init__()
        self.q_proj = torch.nn.Linear(COLUMNS, ROWS, bias=False)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.q_proj(inputs)


def test_galore_state_bytes():
    generator = torch.Generator().manual_seed(0)
    model = _Attention()
    _, optimizer = build_method("galore", model, MethodOptions(learning_rate=1e-3, rank=4))
    model(torch.randn(8, COLUMNS, generator=generator)).square().mean().backward()
    optimizer.step()
    # A 64 x 32 gradient is projected on the right: moments of shape 64 x 4 and a
    # 4 x 32 projection matrix; GaLore's step counter is a Python int.
    assert optimizer_state_bytes(optimizer) == (2 * ROWS * 4 + 4 * COLUMNS) * FP32
