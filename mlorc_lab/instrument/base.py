"""Shared machinery of the step recorders: matrix selection, step hooks, removal."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from mlorc_lab.instrument.spectra import ENCODER_MATRIX_PATTERNS, matrix_type, select_matrices

__all__ = ["StepRecorder", "unwrap_optimizer"]


def unwrap_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """Return the innermost ``torch.optim.Optimizer`` behind wrappers such as accelerate's.

    ``accelerate.optimizer.AcceleratedOptimizer`` keeps the real optimizer in its
    ``optimizer`` attribute; step hooks must go on that one, whose ``step`` runs them.
    """
    inner = optimizer
    while isinstance(getattr(inner, "optimizer", None), torch.optim.Optimizer):
        inner = inner.optimizer
    if not isinstance(inner, torch.optim.Optimizer):
        raise TypeError(f"Expected a torch.optim.Optimizer, got {type(optimizer).__name__}")
    return inner


class StepRecorder:
    """Removable handle that runs ``_before_step`` and ``_after_step`` around each step.

    Subclasses implement the two methods; ``step`` is the number of the step being
    taken (1 for the first). A step is due for recording at step 1 and at every step
    divisible by ``every``.

    Parameters
    ----------
    named_parameters : iterable of (name, parameter)
        Usually ``model.named_parameters()``; filtered by ``patterns``.
    optimizer : torch.optim.Optimizer
        The optimizer whose steps are observed (wrappers are unwrapped).
    writer : object with ``write_many(records)``
        Usually a :class:`mlorc_lab.records.RunWriter`.
    every : int
        Recording interval in optimizer steps.
    patterns : dict or None
        Name patterns of the matrices to record; None records every trainable matrix.
    """

    def __init__(
        self,
        named_parameters: Iterable[tuple[str, torch.nn.Parameter]],
        optimizer: Any,
        writer: Any,
        *,
        every: int,
        patterns: dict[str, str] | None = ENCODER_MATRIX_PATTERNS,
    ) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"Invalid every: {every!r}; the recording interval must be an integer >= 1")
        self.optimizer = unwrap_optimizer(optimizer)
        self.matrices = select_matrices(named_parameters, patterns)
        self.patterns = patterns
        self.writer = writer
        self.every = every
        self.step = 0
        self._handles = [
            self.optimizer.register_step_pre_hook(self._pre_hook),
            self.optimizer.register_step_post_hook(self._post_hook),
        ]

    def is_due(self, step: int) -> bool:
        """Return whether ``step`` is recorded: step 1 and every multiple of ``every``."""
        return step == 1 or step % self.every == 0

    def matrix_type(self, name: str) -> str | None:
        """Return the matrix label (query, ffn_in, ...) of a recorded parameter name."""
        return matrix_type(name, self.patterns) if self.patterns else None

    def group_of(self, param: torch.Tensor) -> dict[str, Any]:
        """Return the optimizer's parameter group that contains ``param``."""
        for group in self.optimizer.param_groups:
            if any(candidate is param for candidate in group["params"]):
                return group
        raise ValueError("The recorded parameter is not in any parameter group of the optimizer")

    def _pre_hook(self, optimizer, args, kwargs) -> None:
        self._before_step(self.step + 1)

    def _post_hook(self, optimizer, args, kwargs) -> None:
        self.step += 1
        self._after_step(self.step)

    def _before_step(self, step: int) -> None:
        pass

    def _after_step(self, step: int) -> None:
        pass

    def remove(self) -> None:
        """Detach the recorder; training then runs exactly as without it."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    @property
    def attached(self) -> bool:
        """True until :meth:`remove` is called."""
        return bool(self._handles)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.remove()
