"""Which parameters MLorc compresses, and the matrix view it compresses them in.

The rule, applied to every parameter that has a gradient:

1. A parameter with fewer than 2 dimensions (bias, LayerNorm weight, scalar) keeps
   dense state: there is no matrix to factorise.
2. An n-D weight (n >= 2) is viewed as a matrix of shape (shape[0], prod(shape[1:])),
   so a convolution kernel (out_channels, in_channels, kh, kw) becomes
   (out_channels, in_channels * kh * kw).
3. Under the default ``compress=None`` the matrix is compressed only when the factors
   of one moment, r * (m + n + 1) numbers, are fewer than its m * n entries. Otherwise
   (small matrices, or rank >= min(m, n)) it keeps dense state. Embeddings and LM
   heads are ordinary matrices and are compressed by this rule.
4. ``compress=False`` in a parameter group gives every parameter in it dense state;
   ``compress=True`` compresses every matrix in it whatever its size (1-D parameters
   still keep dense state), and a rank above min(m, n) then raises a ``ValueError``.

No parameter is ever frozen: dense state means ordinary AdamW or Lion moments.
"""

from __future__ import annotations

import math

import torch

__all__ = ["factor_numel", "matrix_shape", "should_compress"]


def matrix_shape(shape: torch.Size | tuple[int, ...]) -> tuple[int, int] | None:
    """Return the (m, n) matrix view of a parameter shape, or None for 0-D and 1-D."""
    if len(shape) < 2:
        return None
    return int(shape[0]), int(math.prod(shape[1:]))


def factor_numel(shape: tuple[int, int], rank: int) -> int:
    """Return the number of stored values of one moment's factors, r * (m + n + 1)."""
    m, n = shape
    return rank * (m + n + 1)


def should_compress(shape: torch.Size | tuple[int, ...], rank: int, compress: bool | None) -> bool:
    """Decide by the module rule whether a parameter of ``shape`` gets factors.

    Raises
    ------
    ValueError
        When ``compress=True`` forces a matrix whose smaller side is below ``rank``.
    """
    view = matrix_shape(shape)
    if view is None or compress is False:
        return False
    if compress is True:
        if rank > min(view):
            raise ValueError(
                f"Invalid rank: {rank} exceeds min(m, n) = {min(view)} of a parameter viewed as "
                f"{view}; lower the rank or set compress=None to let this parameter keep dense state"
            )
        return True
    return factor_numel(view, rank) < view[0] * view[1]
