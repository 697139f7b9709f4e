"""The Adam-style moments an optimizer is about to compress, read without changing it."""

from __future__ import annotations

from typing import Any

import torch

from mlorc_lab.optim.compression import fix_negative_entries
from mlorc_lab.optim.layout import matrix_shape

__all__ = ["adam_betas", "gradient_matrix", "moments_before_compression", "stored_moment"]


def adam_betas(group: dict[str, Any]) -> tuple[float, float]:
    """Return (beta1, beta2) of an Adam-style parameter group."""
    betas = group.get("betas")
    if betas is None or len(betas) != 2:
        raise ValueError(
            f"The parameter group has no Adam-style 'betas' (got {betas!r}); these recorders need an "
            "optimizer with exp_avg and exp_avg_sq moments such as AdamW or MLorcAdamW"
        )
    return float(betas[0]), float(betas[1])


def gradient_matrix(param: torch.Tensor) -> torch.Tensor | None:
    """Return the gradient of ``param`` as an fp32 (m, n) matrix copy, or None."""
    if param.grad is None:
        return None
    return param.grad.detach().reshape(matrix_shape(param.shape)).to(torch.float32, copy=True)


def stored_moment(optimizer: torch.optim.Optimizer, param: torch.Tensor, name: str) -> torch.Tensor | None:
    """Return moment ``name`` of ``param`` as stored (rebuilt from factors for MLorc), or None."""
    if hasattr(optimizer, "moment"):
        moment = optimizer.moment(param, name)
    else:
        moment = optimizer.state.get(param, {}).get(name)
    if moment is None:
        return None
    return moment.detach().reshape(matrix_shape(param.shape)).to(torch.float32, copy=True)


def moments_before_compression(
    optimizer: torch.optim.Optimizer, param: torch.Tensor, beta1: float, beta2: float
) -> dict[str, torch.Tensor] | None:
    """Return this step's m_t and v_t of ``param`` as the optimizer will form them.

    Call it before the step. m_t = beta1 m_{t-1} + (1 - beta1) g_t and
    v_t = beta2 v_{t-1} + (1 - beta2) g_t^2 from the stored moments (zero before the
    first step). For a compressed MLorc moment after its first step, v_{t-1} gets the
    negative-v fix first, as the optimizer does. For ``torch.optim.AdamW`` these are the
    moments it stores after the step; for MLorc they are the moments it compresses.
    Returns None when ``param`` has no gradient.
    """
    grad = gradient_matrix(param)
    if grad is None:
        return None
    previous_m = stored_moment(optimizer, param, "exp_avg")
    previous_v = stored_moment(optimizer, param, "exp_avg_sq")
    if previous_m is None:
        previous_m = torch.zeros_like(grad)
    if previous_v is None:
        previous_v = torch.zeros_like(grad)
    compressed = getattr(optimizer, "is_compressed", None)
    if compressed is not None and compressed(param):
        fix_negative_entries(previous_v)  # in place, on the copy
    m = previous_m.mul_(beta1).add_(grad, alpha=1.0 - beta1)
    v = previous_v.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
    return {"grad": grad, "exp_avg": m, "exp_avg_sq": v}
