"""The fast path of the MLorc update: the same arithmetic without full-size temporaries.

Profiling one MLorc-AdamW step on CPU (``benchmarks/README.md``) showed that most of
the reference step's time goes to allocating full (m, n) temporaries, not to
arithmetic. glibc serves large blocks by ``mmap``, so every new temporary costs one page
fault per 4 KiB page. The reference step creates about a dozen of them: the rebuilt
moments, the masks and copies of the negative-v fix, the square root of v. The
functions here write into buffers that a :class:`Workspace` keeps between steps, run
every elementwise operation in place, and order the randomized SVD's products so that
MKL's skinny matrix products take their fast layout.

The operations are those of the reference path in the same order, with two
exceptions whose effect is only rounding: the sketch ``A @ Omega`` is computed as
``(Omega^T @ A^T)^T``, and the negative-v fix sums the negative entries with a sign
flip instead of an absolute value. The optional Cholesky-QR orthonormalisation departs
from Householder QR numerically and is off by default.
"""

from __future__ import annotations

import torch

from mlorc_lab.linalg import LowRankFactors, compute_dtype_for, sketch_width

__all__ = [
    "ORTHONORMALISATIONS",
    "Workspace",
    "fix_negative_entries_",
    "orthonormal_basis",
    "randomized_svd_fast",
    "rebuild_into",
]

ORTHONORMALISATIONS = ("householder", "cholesky")


class Workspace:
    """Full-size buffers reused by every step of an optimizer, one per name and dtype.

    Each buffer is a flat tensor that grows to the largest parameter it has served,
    so an optimizer keeps at most one full matrix of its largest compressed parameter
    per buffer name. On CUDA the caching allocator already reuses freed blocks, so
    there the buffers are allocated per step and nothing is kept.
    """

    def __init__(self) -> None:
        self._buffers: dict[tuple[str, torch.dtype, torch.device], torch.Tensor] = {}

    def buffer(self, name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """Return an uninitialised tensor of ``shape`` backed by the buffer ``name``."""
        if device.type != "cpu":
            return torch.empty(shape, dtype=dtype, device=device)
        numel = 1
        for size in shape:
            numel *= size
        key = (name, dtype, device)
        flat = self._buffers.get(key)
        if flat is None or flat.numel() < numel:
            # Drop the old buffer first so that both never exist together.
            self._buffers.pop(key, None)
            flat = torch.empty(numel, dtype=dtype, device=device)
            self._buffers[key] = flat
        return flat[:numel].view(shape)

    def nbytes(self) -> int:
        """Return the bytes the kept buffers take."""
        return sum(flat.numel() * flat.element_size() for flat in self._buffers.values())

    def clear(self) -> None:
        """Release every kept buffer; the next step allocates them again."""
        self._buffers.clear()


def rebuild_into(out: torch.Tensor, factors: LowRankFactors) -> torch.Tensor:
    """Write U @ diag(S) @ V.T into ``out`` (an (m, n) tensor of the compute dtype)."""
    u, s, v = (t.to(out.dtype) for t in factors)
    return torch.mm(u * s, v.T, out=out)


def fix_negative_entries_(
    second_moment: torch.Tensor, scratch: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the negative-v fix in place, using ``scratch`` (same shape) as workspace.

    Gives the same result as :func:`mlorc_lab.optim.compression.fix_negative_entries`
    without allocating: every negative entry becomes the mean absolute value of the
    negative entries. ``scratch`` is overwritten.

    Returns
    -------
    (negative_fraction, fill_value)
        0-d tensors, as the reference function returns them.
    """
    negative_part = torch.clamp(second_moment, max=0, out=scratch)  # v where v < 0, else 0
    negative_count = torch.count_nonzero(negative_part)
    negative_mass = negative_part.sum().neg_()
    fill_value = negative_mass / negative_count.clamp(min=1)
    # max(v, 0) is exact: a negative entry minus itself is 0, the others minus 0 are kept.
    second_moment.sub_(negative_part)
    # sign() is -1 exactly at the negative entries and 0 elsewhere, so this adds the fill
    # value there and an exact zero everywhere else.
    second_moment.addcmul_(negative_part.sign_(), fill_value.to(second_moment.dtype), value=-1.0)
    negative_fraction = negative_count.to(second_moment.dtype) / second_moment.numel()
    return negative_fraction, fill_value


def orthonormal_basis(sketch: torch.Tensor, method: str = "householder") -> torch.Tensor:
    """Return an orthonormal basis of the columns of a tall skinny (m, l) ``sketch``.

    ``"householder"`` is ``torch.linalg.qr`` (LAPACK geqrf), as in the reference path.
    ``"cholesky"`` is CholeskyQR2: Q = Y R^-1 with R the Cholesky factor of the Gram
    matrix Y^T Y, done twice because one pass loses orthogonality in proportion to
    cond(Y)^2 times the unit roundoff and the second pass corrects most of that loss. It replaces the
    QR of an (m, l) matrix by two (l, l) Cholesky factorisations and two products, which
    pays on a GPU where geqrf of a skinny matrix is latency bound. When the Gram matrix
    is not positive definite in the working precision (cond(Y) above about 1/sqrt(eps))
    the Householder QR is used for that sketch instead.
    """
    if method == "householder":
        return torch.linalg.qr(sketch, mode="reduced")[0]
    if method != "cholesky":
        raise ValueError(f"Invalid orthonormalisation: {method!r}; use one of {ORTHONORMALISATIONS}")
    basis = sketch
    for _ in range(2):
        gram = basis.T @ basis
        factor, info = torch.linalg.cholesky_ex(gram, upper=True)
        if bool(info):
            return torch.linalg.qr(sketch, mode="reduced")[0]
        basis = torch.linalg.solve_triangular(factor, basis, upper=True, left=False)
    return basis


def randomized_svd_fast(
    matrix: torch.Tensor,
    rank: int,
    *,
    oversampling: int = 0,
    power_iterations: int = 0,
    generator: torch.Generator,
    orthonormalisation: str = "householder",
) -> LowRankFactors:
    """Compute the factors of :func:`mlorc_lab.linalg.randomized_svd` with faster products.

    The test matrix is drawn exactly as the reference draws it, so both consume the
    generator alike. Products with the tall (m, n) matrix are written as
    ``small @ matrix`` or ``(small @ matrix.T).T``. On the profiling machine (MKL 2024.2,
    fp32), the product of a row-major (m, n) matrix with an (n, 4) one was about 3
    times slower than the equivalent (4, n) @ (n, m) product. The arguments are trusted here:
    the optimizer validated rank and oversampling at construction.
    """
    dtype = compute_dtype_for(matrix.dtype)
    a = matrix.to(dtype)
    width = sketch_width(tuple(a.shape), rank, oversampling)
    test_matrix = torch.randn(a.shape[1], width, generator=generator, device=a.device, dtype=dtype)
    basis = orthonormal_basis((test_matrix.T.contiguous() @ a.T).T, orthonormalisation)  # (m, l)
    for _ in range(power_iterations):
        row_basis = orthonormal_basis((basis.T @ a).T, orthonormalisation)  # (n, l)
        basis = orthonormal_basis((row_basis.T.contiguous() @ a.T).T, orthonormalisation)  # (m, l)

    small = basis.T @ a  # (l, n)
    small_u, singular_values, small_vh = torch.linalg.svd(small, full_matrices=False)
    u = basis @ small_u[:, :rank]
    return LowRankFactors(u, singular_values[:rank], small_vh[:rank].T)
