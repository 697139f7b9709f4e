"""The compiled path of the MLorc update: the elementwise passes fused by ``torch.compile``.

The fast path (:mod:`mlorc_lab.optim.fast`) runs each elementwise operation of a step
as its own pass over the full (m, n) matrices. The negative-v fix alone reads or writes
a full matrix about a dozen times, and the moment and weight updates about twenty times
more. Each pass is bound by memory bandwidth, so on CPU the passes, not the arithmetic,
set the time of a step. Here TorchInductor fuses them into three kernels per AdamW step:
one reduction for the fill value of the negative-v fix, one pass that applies the fix
and updates both moments, and one pass that steps the weights. MLorc-Lion needs one
kernel. The rebuilds and the randomized SVD are the fast path's.

The arithmetic is that of the reference path. Only rounding differs, because a fused
kernel may contract a product and a sum into one fused multiply-add. Each function is
compiled on its first call (about 10 s on CPU; it needs a C++ compiler there) and again
for each new dtype. Shapes and the Python float hyperparameters are compiled as
symbolic inputs, so neither the model's many matrix shapes nor a learning-rate
schedule recompile. Parameters are passed detached: ``torch.compile`` would otherwise
specialise on each parameter's shape.
"""

from __future__ import annotations

import functools

import torch

__all__ = ["adamw_moments_", "adamw_weights_", "lion_step_"]


def _compiled(function):
    """Return ``function`` compiled on its first call, with the compiled code kept."""
    compiled = None

    @functools.wraps(function)
    def call(*args, **kwargs):
        nonlocal compiled
        if compiled is None:
            # Dynamic from the start: one graph serves every shape and hyperparameter value.
            compiled = torch.compile(function, fullgraph=True, dynamic=True)
        return compiled(*args, **kwargs)

    return call


@_compiled
def adamw_moments_(
    exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor, grad: torch.Tensor, beta1: float, beta2: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the negative-v fix to the rebuilt v, then update m and v in place.

    ``exp_avg`` and ``exp_avg_sq`` contain the rebuilt m_{t-1} and v_{t-1}; afterwards they
    contain m_t = beta1 m_{t-1} + (1 - beta1) g and v_t = beta2 fix(v_{t-1}) + (1 - beta2) g^2,
    where fix() sets every negative entry to the mean absolute value of the negative
    entries. With no negative entry (always so at the first step, whose moments are
    zero) fix() changes nothing.

    Returns
    -------
    (negative_fraction, fill_value)
        0-d tensors: the share of negative entries in v_{t-1} and the value they got.
    """
    negative = exp_avg_sq < 0
    count = negative.sum()
    mass = torch.where(negative, exp_avg_sq, 0.0).sum().neg()
    fill = mass / count.clamp(min=1)
    fixed = torch.where(negative, fill, exp_avg_sq)
    exp_avg_sq.copy_(fixed * beta2 + grad * grad * (1.0 - beta2))
    exp_avg.copy_(torch.lerp(exp_avg, grad, 1.0 - beta1))
    return count.to(exp_avg_sq.dtype) / exp_avg_sq.numel(), fill


@_compiled
def adamw_weights_(
    param: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    lr: float,
    weight_decay: float,
    bias_correction1: float,
    bias_correction2_sqrt: float,
    eps: float,
) -> None:
    """Step ``param`` in place by AdamW with this step's full m and v (not modified).

    W <- W (1 - lr * weight_decay) - lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps), computed
    in the moments' dtype and rounded once when written back to ``param``.
    """
    work = param.to(exp_avg.dtype)
    denominator = exp_avg_sq.sqrt() / bias_correction2_sqrt + eps
    step = exp_avg / denominator * (lr / bias_correction1)
    param.copy_(work * (1.0 - lr * weight_decay) - step)


@_compiled
def lion_step_(
    param: torch.Tensor,
    exp_avg: torch.Tensor,
    grad: torch.Tensor,
    lr: float,
    beta1: float,
    beta2: float,
    weight_decay: float,
) -> None:
    """Step ``param`` by Lion and update the momentum in place.

    ``exp_avg`` contains the rebuilt m_{t-1}; afterwards it contains m_t = beta2 m_{t-1} +
    (1 - beta2) g, and W <- W (1 - lr * weight_decay) - lr * sign(beta1 m_{t-1} + (1 - beta1) g).
    """
    work = param.to(exp_avg.dtype)
    direction = torch.sign(exp_avg * beta1 + grad * (1.0 - beta1))
    param.copy_(work * (1.0 - lr * weight_decay) - direction * lr)
    exp_avg.copy_(exp_avg * beta2 + grad * (1.0 - beta2))
