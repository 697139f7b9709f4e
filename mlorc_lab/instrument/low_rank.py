"""Recorder of the low-rank assumption and of the negative-v fix during training.

At each due step and for each recorded matrix it writes one ``low_rank`` record per
quantity (``grad``, ``exp_avg``, ``exp_avg_sq``): the singular values, rho =
tail_r / ||M||_F, the effective rank, and whether the convergence condition of
:func:`mlorc_lab.diagnostics.theorem_threshold` holds. The moments are those the
optimizer forms at this step before any compression (see
:func:`mlorc_lab.instrument.moments.moments_before_compression`): the rank-r factors
MLorc stores would give rho = 0 by construction.

For MLorc optimizers it also writes a ``negative_v`` record per compressed matrix at
every step from the second on: the fraction of negative entries in the rebuilt second
moment and the value the negative-v fix wrote into them.

Cost: one exact SVD per matrix and quantity at each due step.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

from mlorc_lab.diagnostics.low_rank import summarize_low_rank, theorem_threshold
from mlorc_lab.instrument.base import StepRecorder
from mlorc_lab.instrument.moments import adam_betas, moments_before_compression
from mlorc_lab.instrument.spectra import ENCODER_MATRIX_PATTERNS

__all__ = ["LowRankRecorder", "rank_settings"]

LOW_RANK_QUANTITIES = ("grad", "exp_avg", "exp_avg_sq")


def rank_settings(group: dict[str, Any], rank: int | None, oversampling: int | None) -> tuple[int, int]:
    """Return (rank, oversampling): the arguments, else the group's, else an error."""
    rank = rank if rank is not None else group.get("rank")
    oversampling = oversampling if oversampling is not None else group.get("oversampling")
    if rank is None or oversampling is None:
        raise ValueError(
            "The optimizer has no 'rank'/'oversampling' options (it is not an MLorc optimizer); "
            "pass rank= and oversampling= to the recorder"
        )
    return int(rank), int(oversampling)


class LowRankRecorder(StepRecorder):
    """Removable handle that records rho, effective rank and the negative-v fix.

    Parameters
    ----------
    named_parameters, optimizer, writer, every, patterns
        See :class:`mlorc_lab.instrument.base.StepRecorder`.
    rank, oversampling : int, optional
        r and p of rho and of the condition. None takes them from the optimizer's
        parameter group (MLorc optimizers have both); other optimizers need them.
    quantities : sequence of str
        Any of "grad", "exp_avg", "exp_avg_sq".
    """

    def __init__(
        self,
        named_parameters: Iterable[tuple[str, torch.nn.Parameter]],
        optimizer: Any,
        writer: Any,
        *,
        every: int = 10,
        patterns: dict[str, str] | None = ENCODER_MATRIX_PATTERNS,
        rank: int | None = None,
        oversampling: int | None = None,
        quantities: Sequence[str] = LOW_RANK_QUANTITIES,
    ) -> None:
        unknown = sorted(set(quantities) - set(LOW_RANK_QUANTITIES))
        if unknown:
            raise ValueError(f"Unknown quantities {unknown}; use any of {LOW_RANK_QUANTITIES}")
        super().__init__(named_parameters, optimizer, writer, every=every, patterns=patterns)
        self.quantities = tuple(quantities)
        self._settings = {}
        for name, param in self.matrices.items():
            group = self.group_of(param)
            beta1, beta2 = adam_betas(group)
            self._settings[name] = (beta1, beta2, *rank_settings(group, rank, oversampling))

    def _before_step(self, step: int) -> None:
        if not self.is_due(step):
            return
        records = []
        for name, param in self.matrices.items():
            beta1, beta2, rank, oversampling = self._settings[name]
            moments = moments_before_compression(self.optimizer, param, beta1, beta2)
            if moments is None:
                continue
            shape = tuple(moments["grad"].shape)
            threshold = theorem_threshold(beta2, shape, rank, oversampling)
            for quantity in self.quantities:
                values = torch.linalg.svdvals(moments[quantity]).cpu().numpy()
                summary = summarize_low_rank(values, rank)
                condition_met = None
                if threshold is not None and summary.rho is not None:
                    condition_met = summary.rho <= threshold
                records.append(
                    dict(
                        kind="low_rank",
                        step=step,
                        matrix=name,
                        matrix_type=self.matrix_type(name),
                        quantity=quantity,
                        shape=list(shape),
                        rank=rank,
                        oversampling=oversampling,
                        beta2=beta2,
                        norm=summary.norm,
                        tail=summary.tail,
                        rho=summary.rho,
                        effective_rank=summary.effective_rank,
                        top_k_ratio=summary.top_k_ratio,
                        condition_applicable=threshold is not None,
                        condition_threshold=threshold,
                        condition_holds=condition_met,
                        singular_values=[float(f"{value:.6g}") for value in values.tolist()],
                    )
                )
        self.writer.write_many(records)

    def _after_step(self, step: int) -> None:
        records = []
        for name, param in self.matrices.items():
            state = self.optimizer.state.get(param, {})
            if "negative_v_fraction" not in state:
                continue
            records.append(
                dict(
                    kind="negative_v",
                    step=step,
                    matrix=name,
                    matrix_type=self.matrix_type(name),
                    negative_fraction=float(state["negative_v_fraction"]),
                    fill_value=float(state["negative_v_fill"]),
                )
            )
        if records:
            self.writer.write_many(records)
