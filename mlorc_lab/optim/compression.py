"""The compress and rebuild steps shared by the MLorc optimizers, as pure functions."""

from __future__ import annotations

import torch

from mlorc_lab.linalg import LowRankFactors, randomized_svd, rebuild

__all__ = ["compress_moment", "fix_negative_entries", "rebuild_moment", "zero_factors"]


def zero_factors(shape: tuple[int, int], rank: int, dtype: torch.dtype, device: torch.device) -> LowRankFactors:
    """Return factors that rebuild to the zero matrix, the state before the first step."""
    m, n = shape
    return LowRankFactors(
        torch.zeros(m, rank, dtype=dtype, device=device),
        torch.zeros(rank, dtype=dtype, device=device),
        torch.zeros(n, rank, dtype=dtype, device=device),
    )


def compress_moment(
    moment: torch.Tensor,
    rank: int,
    *,
    oversampling: int,
    power_iterations: int,
    generator: torch.Generator,
    storage_dtype: torch.dtype,
) -> LowRankFactors:
    """Compress a full (m, n) moment into rank-r factors stored in ``storage_dtype``."""
    u, s, v = randomized_svd(
        moment, rank, oversampling=oversampling, power_iterations=power_iterations, generator=generator
    )
    return LowRankFactors(u.to(storage_dtype), s.to(storage_dtype), v.to(storage_dtype))


def rebuild_moment(factors: LowRankFactors, work_dtype: torch.dtype) -> torch.Tensor:
    """Rebuild a full (m, n) moment from its factors in ``work_dtype``."""
    return rebuild(LowRankFactors(*(t.to(work_dtype) for t in factors)))


def fix_negative_entries(second_moment: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Apply the negative-v fix to a rebuilt second moment, in place.

    A rank-r rebuild of the elementwise-nonnegative v can have negative entries, whose
    square root would be NaN. Following the MLorc paper, every negative entry is
    replaced by the mean absolute value of the negative entries; other entries are kept.

    Returns
    -------
    (second_moment, negative_fraction, fill_value)
        The fixed tensor, the fraction of entries that were negative and the value
        written into them (0 when there were none), both as 0-d tensors so that no
        device synchronisation happens here.
    """
    negative = second_moment < 0
    negative_count = negative.sum()
    negative_mass = torch.where(negative, second_moment, 0).abs().sum()
    fill_value = negative_mass / negative_count.clamp(min=1)
    second_moment.copy_(torch.where(negative, fill_value.to(second_moment.dtype), second_moment))
    negative_fraction = negative_count.to(second_moment.dtype) / second_moment.numel()
    return second_moment, negative_fraction, fill_value
