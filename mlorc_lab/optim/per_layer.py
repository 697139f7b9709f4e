"""Per-layer updates: step each parameter from its gradient hook and free the gradient.

In the standard mode every gradient of the model is kept until ``optimizer.step()``.
The per-layer mode, which the MLorc paper (arXiv 2506.01897) uses to save memory,
steps each parameter as soon as autograd has accumulated its gradient and releases the
gradient at once. Full gradients of the whole model therefore never exist together.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import torch

from mlorc_lab.optim.base import MLorcOptimizer

__all__ = ["PerLayerUpdater"]

logger = logging.getLogger(__name__)


class PerLayerUpdater:
    """Step the parameters of an MLorc optimizer from their post-accumulate-grad hooks.

    A hook is registered on every parameter with
    ``Tensor.register_post_accumulate_grad_hook``. Each backward pass that gives a
    parameter a gradient counts as one micro-batch for it. On its
    ``accumulation_steps``-th micro-batch the hook steps that parameter alone with the
    accumulated gradient and sets its ``.grad`` to None. Before that the gradient is left
    to accumulate. The step is :meth:`MLorcOptimizer.step_parameter`, which applies the
    gradient checks of ``step()`` to this one parameter.

    Keep the training loop of the standard mode: call ``optimizer.step()``,
    ``scheduler.step()`` and ``optimizer.zero_grad()`` once every
    ``accumulation_steps`` micro-batches. ``optimizer.step()`` then only steps the
    parameters whose hook has not (one that missed a gradient in the last micro-batch)
    and restarts every micro-batch count, so the learning rate the scheduler sets is the
    one the next round of hooks uses, and the weights equal those of the standard mode.

    Parameters
    ----------
    optimizer : MLorcOptimizer
        The optimizer that owns the parameters and their state.
    model_or_params : torch.nn.Module or iterable of Tensor
        The module whose parameters (those with ``requires_grad``) get hooks, or the
        parameters themselves. Each must be in one of the optimizer's groups.
    accumulation_steps : int, default 1
        Number of micro-batches whose gradients are summed before each update. Scale
        the loss by 1 / accumulation_steps, as in the standard mode.

    Raises
    ------
    ValueError
        Under DistributedDataParallel (a wrapped module, or an initialised process
        group with more than one process): the hook fires before DDP has averaged the
        gradient over the processes, so each replica would step with its own gradient.
        Use the standard mode there.

    Notes
    -----
    The finite-gradient check covers one parameter at a time: a NaN gradient raises
    ``NonFiniteGradientError`` from ``loss.backward()`` and leaves that parameter and
    its state untouched, but parameters stepped earlier in the same backward pass keep
    their update. ``torch.amp.GradScaler`` cannot be used, because it unscales and
    checks gradients only in ``scaler.step()``, after the hooks have stepped; use bf16
    autocast, which needs no scaler.

    Take checkpoints after ``optimizer.step()``, where every micro-batch count is zero.

    Examples
    --------
    >>> updater = PerLayerUpdater(optimizer, model, accumulation_steps=4)
    >>> for index, batch in enumerate(batches):
    ...     (loss_fn(model, batch) / 4).backward()  # the 4th backward steps the weights
    ...     if (index + 1) % 4 == 0:
    ...         optimizer.step()  # steps nothing left over, restarts the counts
    ...         scheduler.step()
    ...         optimizer.zero_grad()
    >>> updater.remove()  # back to the standard mode
    """

    def __init__(
        self,
        optimizer: MLorcOptimizer,
        model_or_params: torch.nn.Module | Iterable[torch.Tensor],
        accumulation_steps: int = 1,
    ) -> None:
        if not isinstance(optimizer, MLorcOptimizer):
            raise TypeError(
                f"PerLayerUpdater expects an MLorc optimizer (MLorcAdamW or MLorcLion), "
                f"got {type(optimizer).__name__}"
            )
        if isinstance(accumulation_steps, bool) or not isinstance(accumulation_steps, int) or accumulation_steps < 1:
            raise ValueError(
                f"Invalid accumulation_steps: {accumulation_steps!r}; it must be an integer >= 1"
            )
        _reject_data_parallel(model_or_params)
        if isinstance(model_or_params, torch.nn.Module):
            params = [param for param in model_or_params.parameters() if param.requires_grad]
        else:
            params = [param for param in model_or_params if param.requires_grad]
        for param in params:
            optimizer._group_of(param)  # raises ValueError for a parameter it does not own

        self.optimizer = optimizer
        self.accumulation_steps = accumulation_steps
        self._params = params
        self._micro_batches: dict[torch.Tensor, int] = {param: 0 for param in params}
        self._handles = [param.register_post_accumulate_grad_hook(self._on_gradient) for param in params]
        self._handles.append(optimizer.register_step_post_hook(self._on_optimizer_step))
        logger.debug(
            "Per-layer updates on %d parameters, accumulation_steps=%d", len(params), accumulation_steps
        )

    def _on_gradient(self, param: torch.Tensor) -> None:
        count = self._micro_batches[param] + 1
        if count < self.accumulation_steps:
            self._micro_batches[param] = count
            return
        self.optimizer.step_parameter(param)
        param.grad = None
        self._micro_batches[param] = 0

    def _on_optimizer_step(self, optimizer: MLorcOptimizer, args: Any, kwargs: Any) -> None:
        for param in self._micro_batches:
            self._micro_batches[param] = 0

    def pending_micro_batches(self) -> int:
        """Return the largest micro-batch count of any parameter (0 right after a step)."""
        return max(self._micro_batches.values(), default=0)

    def remove(self) -> None:
        """Remove every hook, returning the parameters to the standard mode."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def _reject_data_parallel(model_or_params: Any) -> None:
    if isinstance(model_or_params, torch.nn.parallel.DistributedDataParallel):
        raise ValueError(
            "PerLayerUpdater cannot run under DistributedDataParallel: the per-parameter hook "
            "fires before DDP has averaged the gradient across processes, so the replicas "
            "would step with different gradients and drift apart. Use the standard mode "
            "(optimizer.step() after backward) with DDP."
        )
    distributed = torch.distributed
    if distributed.is_available() and distributed.is_initialized() and distributed.get_world_size() > 1:
        raise ValueError(
            f"PerLayerUpdater cannot run in a process group of {distributed.get_world_size()} "
            "processes: the per-parameter hook fires before the gradient is averaged across "
            "processes, so the replicas would step with different gradients. Use the standard "
            "mode (optimizer.step() after backward) with DistributedDataParallel."
        )
