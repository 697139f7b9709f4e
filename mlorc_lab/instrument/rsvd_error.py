"""Recorder of the randomized SVD's error on the first moments of a real run.

At each due step it runs :func:`mlorc_lab.diagnostics.rsvd_error_sweep` on the first
moment m_t of each recorded matrix (the moment before compression, see
:func:`mlorc_lab.instrument.moments.moments_before_compression`) and writes one
``rsvd_error`` record per (oversampling, power iterations).

Cost: one exact SVD plus draws x len(oversamplings) x len(power_iterations) randomized
SVDs per matrix and due step, so choose a large ``every`` and few ``patterns``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

from mlorc_lab.diagnostics.rsvd_error import DEFAULT_OVERSAMPLINGS, DEFAULT_POWER_ITERATIONS, sweep_studies
from mlorc_lab.instrument.base import StepRecorder
from mlorc_lab.instrument.low_rank import rank_settings
from mlorc_lab.instrument.moments import adam_betas, moments_before_compression
from mlorc_lab.instrument.spectra import ENCODER_MATRIX_PATTERNS

__all__ = ["RsvdErrorRecorder"]


class RsvdErrorRecorder(StepRecorder):
    """Removable handle that measures randomized SVD errors on real first moments.

    Parameters
    ----------
    named_parameters, optimizer, writer, every, patterns
        See :class:`mlorc_lab.instrument.base.StepRecorder`.
    rank : int, optional
        r of the study; None takes it from the optimizer's group.
    oversamplings, power_iterations : sequence of int
        The p and q values swept.
    draws : int
        Independent test matrices per (p, q).
    seed : int
        Seed of the recorder's own generator, so the run's RNG streams are untouched.
    """

    def __init__(
        self,
        named_parameters: Iterable[tuple[str, torch.nn.Parameter]],
        optimizer: Any,
        writer: Any,
        *,
        every: int = 100,
        patterns: dict[str, str] | None = ENCODER_MATRIX_PATTERNS,
        rank: int | None = None,
        oversamplings: Sequence[int] = DEFAULT_OVERSAMPLINGS,
        power_iterations: Sequence[int] = DEFAULT_POWER_ITERATIONS,
        draws: int = 20,
        seed: int = 0,
    ) -> None:
        super().__init__(named_parameters, optimizer, writer, every=every, patterns=patterns)
        self.oversamplings = tuple(oversamplings)
        self.power_iterations = tuple(power_iterations)
        self.draws = draws
        self._generator = torch.Generator().manual_seed(seed)
        self._settings = {}
        for name, param in self.matrices.items():
            group = self.group_of(param)
            # The oversampling is swept, so only the rank is read from the group.
            group_rank = rank if rank is not None else group.get("rank")
            self._settings[name] = (*adam_betas(group), rank_settings(group, group_rank, 0)[0])

    def _before_step(self, step: int) -> None:
        if not self.is_due(step):
            return
        for name, param in self.matrices.items():
            beta1, beta2, rank = self._settings[name]
            moments = moments_before_compression(self.optimizer, param, beta1, beta2)
            if moments is None:
                continue
            moment = moments["exp_avg"]
            if self._generator.device != moment.device:
                self._generator = torch.Generator(device=moment.device).manual_seed(self._generator.initial_seed())
            studies = sweep_studies(
                moment,
                rank,
                oversamplings=self.oversamplings,
                power_iterations=self.power_iterations,
                draws=self.draws,
                generator=self._generator,
            )
            records = [
                dict(
                    kind="rsvd_error",
                    step=step,
                    matrix=name,
                    matrix_type=self.matrix_type(name),
                    **study.as_record(),
                )
                for study in studies
            ]
            self.writer.write_many(records)
