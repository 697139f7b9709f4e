"""The method registry: one place that builds the model and optimizer of each method.

Every runner and notebook builds its optimizer here, so a method means the same thing
everywhere. ``build_method`` returns the (possibly wrapped) model and its optimizer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from mlorc_lab.optim import MLorcAdamW

__all__ = ["METHODS", "MethodOptions", "build_method"]


@dataclass(frozen=True)
class MethodOptions:
    """Hyperparameters shared by the methods; each method reads the ones it uses."""

    learning_rate: float
    weight_decay: float = 0.0
    betas: tuple[float, float] | None = None
    rank: int = 4
    oversampling: int = 0
    seed: int = 0


def _full_adamw(model: torch.nn.Module, options: MethodOptions) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    betas = options.betas or (0.9, 0.999)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=options.learning_rate, betas=betas, weight_decay=options.weight_decay
    )
    return model, optimizer


def _mlorc_adamw(model: torch.nn.Module, options: MethodOptions) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    # The paper uses beta1 = 0.8 for MLorc-AdamW fine-tuning.
    betas = options.betas or (0.8, 0.999)
    optimizer = MLorcAdamW(
        model.named_parameters(),
        lr=options.learning_rate,
        betas=betas,
        weight_decay=options.weight_decay,
        rank=options.rank,
        oversampling=options.oversampling,
        seed=options.seed,
    )
    return model, optimizer


METHODS: dict[str, Callable[[torch.nn.Module, MethodOptions], tuple[torch.nn.Module, torch.optim.Optimizer]]] = {
    "full-adamw": _full_adamw,
    "mlorc-adamw": _mlorc_adamw,
}


def build_method(method: str, model: torch.nn.Module, options: MethodOptions) -> tuple[torch.nn.Module, Any]:
    """Return ``(model, optimizer)`` for ``method``; the model may come back wrapped."""
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; choose one of {', '.join(sorted(METHODS))}")
    return METHODS[method](model, options)
