"""Recorder of projection drift: GaLore's fixed projector and MLorc's factors against the true momentum.

For each recorded matrix the recorder keeps a shadow uncompressed AdamW first moment,
m_shadow <- beta1 m_shadow + (1 - beta1) g at every step, with the optimizer's beta1 and
the gradients of the run. It is the ground truth both methods approximate.

A GaLore-style projector P (Zhao et al. 2024, "GaLore") is refreshed at step 1 and every
``refresh_every`` steps after it from the current gradient's top-r singular vectors.
As in ``galore_torch.GaLoreProjector`` with ``proj_type="std"``, it projects the smaller
side: left singular vectors U_r (approximation P P^T M) when m < n, right singular
vectors V_r (approximation M P P^T) when m >= n.

At each due step and each refresh step it writes, per matrix, one ``drift`` record per
method:

- ``galore``: the principal angles between span(P) and the top-r singular subspace of
  m_shadow on the projector's side, and ||P P^T M - M||_F / ||M||_F (or M P P^T);
- ``mlorc``: the same angles for MLorc's stored factors (U or V on the same side) and
  ||U diag(S) V^T - M||_F / ||M||_F. When the optimizer is not MLorc, the factors are a
  randomized SVD of m_shadow drawn from the recorder's own fixed-seed generator.

Each record also has ``best_error``, the exact rank-r error tail / ||M||_F. At each
refresh after the first it writes a ``projector_refresh`` record with the principal
angles between the old and new projectors.

Cost: one extra moment per matrix in memory, an SVD of the gradient at each refresh,
and one exact SVD of m_shadow per matrix and due step.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from mlorc_lab.instrument.base import StepRecorder
from mlorc_lab.instrument.low_rank import rank_settings
from mlorc_lab.instrument.moments import adam_betas, gradient_matrix
from mlorc_lab.instrument.spectra import ENCODER_MATRIX_PATTERNS
from mlorc_lab.linalg import principal_angles, randomized_svd, rebuild

__all__ = ["DriftRecorder", "projector_side"]


def projector_side(shape: tuple[int, int]) -> str:
    """Return "left" when m < n, else "right": the side GaLore's standard projector uses."""
    return "left" if shape[0] < shape[1] else "right"


def _project(matrix: torch.Tensor, projector: torch.Tensor, side: str) -> torch.Tensor:
    if side == "left":
        return projector @ (projector.T @ matrix)
    return (matrix @ projector) @ projector.T


def _relative_error(approximation: torch.Tensor, matrix: torch.Tensor, norm: float) -> float | None:
    return float(torch.linalg.norm(approximation - matrix)) / norm if norm > 0 else None


def _angle_fields(angles: torch.Tensor) -> dict[str, Any]:
    values = angles.tolist()
    return dict(
        angles=[float(f"{value:.6g}") for value in values],
        angle_mean=float(angles.mean()),
        angle_max=float(angles.max()),
    )


class DriftRecorder(StepRecorder):
    """Removable handle that records GaLore and MLorc subspace drift against a shadow momentum.

    Parameters
    ----------
    named_parameters, optimizer, writer, every, patterns
        See :class:`mlorc_lab.instrument.base.StepRecorder`.
    rank : int, optional
        r of the projector, of the compared subspaces and of the stand-in factors. None
        takes it from the optimizer's group (MLorc optimizers have it).
    refresh_every : int, default 200
        GaLore's projector update gap T (200 is galore_torch's default).
    oversampling, power_iterations : int, optional
        p and q of the stand-in randomized SVD for optimizers that are not MLorc; None
        takes p from the group, else 0, and q from the group, else 0.
    seed : int
        Seed of the stand-in randomized SVD's generator.
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
        refresh_every: int = 200,
        oversampling: int | None = None,
        power_iterations: int | None = None,
        seed: int = 0,
    ) -> None:
        if isinstance(refresh_every, bool) or not isinstance(refresh_every, int) or refresh_every < 1:
            raise ValueError(f"Invalid refresh_every: {refresh_every!r}; it must be an integer >= 1")
        super().__init__(named_parameters, optimizer, writer, every=every, patterns=patterns)
        self.refresh_every = refresh_every
        self.seed = seed
        self._settings: dict[str, tuple[float, int, int, int]] = {}
        for name, param in self.matrices.items():
            group = self.group_of(param)
            beta1, _ = adam_betas(group)
            p = oversampling if oversampling is not None else group.get("oversampling", 0)
            q = power_iterations if power_iterations is not None else group.get("power_iterations", 0)
            self._settings[name] = (beta1, rank_settings(group, rank, p)[0], int(p), int(q))
        self.shadow: dict[str, torch.Tensor] = {}
        self.projectors: dict[str, torch.Tensor] = {}
        self.refresh_steps: list[int] = []

    def is_refresh(self, step: int) -> bool:
        """Return whether GaLore refreshes its projector at ``step`` (1, T + 1, 2T + 1, ...)."""
        return (step - 1) % self.refresh_every == 0

    def _before_step(self, step: int) -> None:
        refreshed = []
        for name, param in self.matrices.items():
            grad = gradient_matrix(param)
            if grad is None:
                continue
            beta1, rank = self._settings[name][:2]
            shadow = self.shadow.get(name)
            if shadow is None:
                shadow = self.shadow[name] = torch.zeros_like(grad)
            shadow.mul_(beta1).add_(grad, alpha=1.0 - beta1)
            if self.is_refresh(step):
                refreshed.append(self._refresh(step, name, grad, rank))
        if self.is_refresh(step):
            self.refresh_steps.append(step)
        records = [record for record in refreshed if record is not None]
        if records:
            self.writer.write_many(records)

    def _refresh(self, step: int, name: str, grad: torch.Tensor, rank: int) -> dict[str, Any] | None:
        side = projector_side(tuple(grad.shape))
        u, _, vh = torch.linalg.svd(grad, full_matrices=False)
        projector = u[:, :rank] if side == "left" else vh[:rank].T
        previous = self.projectors.get(name)
        self.projectors[name] = projector
        if previous is None:
            return None
        return dict(
            kind="projector_refresh",
            step=step,
            matrix=name,
            matrix_type=self.matrix_type(name),
            side=side,
            rank=rank,
            **_angle_fields(principal_angles(previous, projector)),
        )

    def _mlorc_factors(self, name: str, param: torch.Tensor, moment: torch.Tensor):
        state = self.optimizer.state.get(param, {})
        if "exp_avg_U" in state:
            return (state["exp_avg_U"].float(), state["exp_avg_S"].float(), state["exp_avg_V"].float()), "stored"
        _, rank, oversampling, power_iterations = self._settings[name]
        # A fresh generator per call keeps the stand-in factors independent of how many
        # steps were recorded before.
        generator = torch.Generator(device=moment.device).manual_seed(self.seed)
        factors = randomized_svd(
            moment, rank, oversampling=oversampling, power_iterations=power_iterations, generator=generator
        )
        return factors, "rsvd_of_shadow"

    def _after_step(self, step: int) -> None:
        # Refresh steps are recorded too, so the figure shows the fit right after each refresh.
        if not (self.is_due(step) or self.is_refresh(step)):
            return
        records = []
        for name, param in self.matrices.items():
            moment = self.shadow.get(name)
            projector = self.projectors.get(name)
            if moment is None or projector is None:
                continue
            rank = self._settings[name][1]
            side = projector_side(tuple(moment.shape))
            u, singular_values, vh = torch.linalg.svd(moment, full_matrices=False)
            truth = u[:, :rank] if side == "left" else vh[:rank].T
            norm = float(torch.linalg.norm(moment))
            best = float(singular_values[rank:].square().sum().sqrt()) / norm if norm > 0 else None
            common = dict(
                kind="drift",
                step=step,
                matrix=name,
                matrix_type=self.matrix_type(name),
                side=side,
                rank=rank,
                refresh_every=self.refresh_every,
                last_refresh=self.refresh_steps[-1] if self.refresh_steps else None,
                best_error=best,
            )
            records.append(
                dict(
                    common,
                    method="galore",
                    source="gradient_svd",
                    reconstruction_error=_relative_error(_project(moment, projector, side), moment, norm),
                    **_angle_fields(principal_angles(projector, truth)),
                )
            )
            factors, source = self._mlorc_factors(name, param, moment)
            basis = factors[0] if side == "left" else factors[2]
            records.append(
                dict(
                    common,
                    method="mlorc",
                    source=source,
                    reconstruction_error=_relative_error(rebuild(factors), moment, norm),
                    **_angle_fields(principal_angles(basis, truth)),
                )
            )
        if records:
            self.writer.write_many(records)
