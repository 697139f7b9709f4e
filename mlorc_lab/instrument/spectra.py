"""Recorder of gradient and moment spectra during training.

For each selected matrix parameter, every ``every`` optimizer steps (and at step 1),
the recorder writes the exact singular values (``torch.linalg.svdvals``) of

- ``grad``: the gradient the optimizer is about to use (from a step pre-hook),
- ``exp_avg`` and ``exp_avg_sq``: the first and second moments after the step (from a
  step post-hook); for ``torch.optim.AdamW`` these are its state tensors, for the
  MLorc optimizers the moments rebuilt from the stored factors.

Each (step, matrix, quantity) becomes one record with the full spectrum and its top-k
ratio, so other summaries can be computed later from the same run.

The cost is one exact SVD per matrix and quantity at each recorded step, O(m n min(m,
n)); choose ``every`` and ``patterns`` accordingly.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from mlorc_lab.optim.layout import matrix_shape
from mlorc_lab.spectral import top_k_ratio

__all__ = ["ENCODER_MATRIX_PATTERNS", "SpectrumRecorder", "matrix_type", "select_matrices"]

# The matrices the MLorc paper's appendix C.1 records for encoder models (BERT and
# RoBERTa names): query, key, value, attention output, feed-forward in and out.
ENCODER_MATRIX_PATTERNS: dict[str, str] = {
    "query": r"attention\.self\.query\.weight$",
    "key": r"attention\.self\.key\.weight$",
    "value": r"attention\.self\.value\.weight$",
    "attention_output": r"attention\.output\.dense\.weight$",
    "ffn_in": r"intermediate\.dense\.weight$",
    "ffn_out": r"layer\.\d+\.output\.dense\.weight$",
}

QUANTITIES = ("grad", "exp_avg", "exp_avg_sq")


def matrix_type(name: str, patterns: dict[str, str] = ENCODER_MATRIX_PATTERNS) -> str | None:
    """Return the label of the first pattern matching a parameter name, or None."""
    for label, pattern in patterns.items():
        if re.search(pattern, name):
            return label
    return None


def select_matrices(
    named_parameters: Iterable[tuple[str, torch.nn.Parameter]],
    patterns: dict[str, str] | None = ENCODER_MATRIX_PATTERNS,
) -> dict[str, torch.nn.Parameter]:
    """Return the trainable matrix parameters whose names match ``patterns``.

    ``patterns=None`` selects every trainable parameter with at least 2 dimensions.
    """
    selected = {}
    for name, param in named_parameters:
        if not param.requires_grad or matrix_shape(param.shape) is None:
            continue
        if patterns is None or matrix_type(name, patterns) is not None:
            selected[name] = param
    if not selected:
        raise ValueError(f"No trainable matrix parameter matches the patterns {patterns}; check the model's names")
    return selected


def _stored_moment(optimizer: torch.optim.Optimizer, param: torch.Tensor, name: str) -> torch.Tensor | None:
    if hasattr(optimizer, "moment"):
        return optimizer.moment(param, name)
    return optimizer.state.get(param, {}).get(name)


class SpectrumRecorder:
    """Removable handle that records spectra through optimizer step hooks.

    Parameters
    ----------
    named_parameters : iterable of (name, parameter)
        Usually ``model.named_parameters()``; filtered by ``patterns``.
    optimizer : torch.optim.Optimizer
        ``torch.optim.AdamW`` or an MLorc optimizer (anything with Adam-style
        ``exp_avg``/``exp_avg_sq`` state or a ``moment(param, name)`` method).
    writer : object with ``write_many(records)``
        Usually a :class:`mlorc_lab.records.RunWriter`.
    every : int, default 10
        Record at step 1 and at every step divisible by ``every``.
    patterns : dict or None
        Name patterns of the matrices to record; None records every matrix.
    quantities : sequence of str
        Any of "grad", "exp_avg", "exp_avg_sq".
    top_k : int, default 8
        k of the top-k ratio stored with each spectrum.

    Call :meth:`remove` (or leave a ``with`` block) to detach; training then runs
    exactly as without the recorder, since it only reads tensors.
    """

    def __init__(
        self,
        named_parameters: Iterable[tuple[str, torch.nn.Parameter]],
        optimizer: torch.optim.Optimizer,
        writer: Any,
        *,
        every: int = 10,
        patterns: dict[str, str] | None = ENCODER_MATRIX_PATTERNS,
        quantities: Sequence[str] = QUANTITIES,
        top_k: int = 8,
    ) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"Invalid every: {every!r}; record interval must be an integer >= 1")
        unknown = sorted(set(quantities) - set(QUANTITIES))
        if unknown:
            raise ValueError(f"Unknown quantities {unknown}; use any of {QUANTITIES}")
        self.matrices = select_matrices(named_parameters, patterns)
        self.patterns = patterns
        self.optimizer = optimizer
        self.writer = writer
        self.every = every
        self.quantities = tuple(quantities)
        self.top_k = top_k
        self.step = 0
        self._handles = [
            optimizer.register_step_pre_hook(self._before_step),
            optimizer.register_step_post_hook(self._after_step),
        ]

    def _due(self, step: int) -> bool:
        return step == 1 or step % self.every == 0

    def _records(self, step: int, quantity: str, tensors: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        records = []
        for name, tensor in tensors.items():
            view = matrix_shape(tensor.shape)
            values = torch.linalg.svdvals(tensor.detach().reshape(view).to(torch.float32)).cpu().tolist()
            records.append(
                dict(
                    kind="spectrum",
                    step=step,
                    matrix=name,
                    matrix_type=matrix_type(name, self.patterns) if self.patterns else None,
                    quantity=quantity,
                    top_k=self.top_k,
                    top_k_ratio=top_k_ratio(values, self.top_k),
                    singular_values=[float(f"{value:.6g}") for value in values],
                )
            )
        return records

    def _before_step(self, optimizer, args, kwargs) -> None:
        step = self.step + 1
        if "grad" not in self.quantities or not self._due(step):
            return
        grads = {name: p.grad for name, p in self.matrices.items() if p.grad is not None}
        self.writer.write_many(self._records(step, "grad", grads))

    def _after_step(self, optimizer, args, kwargs) -> None:
        self.step += 1
        if not self._due(self.step):
            return
        for quantity in self.quantities:
            if quantity == "grad":
                continue
            moments = {}
            for name, param in self.matrices.items():
                moment = _stored_moment(self.optimizer, param, quantity)
                if moment is not None:
                    moments[name] = moment
            self.writer.write_many(self._records(self.step, quantity, moments))

    def remove(self) -> None:
        """Detach the recorder from the optimizer."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> SpectrumRecorder:
        return self

    def __exit__(self, *exc_info) -> None:
        self.remove()
