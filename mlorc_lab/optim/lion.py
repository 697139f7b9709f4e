"""MLorc-Lion: Lion whose momentum is stored as randomized-SVD factors."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from mlorc_lab.linalg import LowRankFactors, compute_dtype_for
from mlorc_lab.optim.base import MLorcOptimizer
from mlorc_lab.optim.compression import compress_moment, rebuild_moment
from mlorc_lab.optim.fast import randomized_svd_fast, rebuild_into
from mlorc_lab.optim.fused import lion_step_
from mlorc_lab.optim.layout import matrix_shape

__all__ = ["MLorcLion", "lion_update"]


def lion_update(
    param: torch.Tensor,
    exp_avg: torch.Tensor,
    grad: torch.Tensor,
    *,
    lr: float,
    beta1: float,
    beta2: float,
    weight_decay: float,
) -> torch.Tensor:
    """Step ``param`` in place by Lion and return the new momentum as a new tensor.

    ``exp_avg`` is the previous momentum m and ``grad`` the gradient g. Both have
    ``param``'s shape and the dtype the arithmetic runs in (at least fp32), and neither
    is modified. The steps are

    1. W <- W (1 - lr * weight_decay)
    2. W <- W - lr * sign(beta1 * m + (1 - beta1) * g)
    3. return beta2 * m + (1 - beta2) * g

    in the order ``lion_pytorch.Lion`` (0.2) computes them, so that a full-rank run
    matches it to rounding. Half-precision weights are updated in fp32 and rounded once
    when written back.
    """
    work_dtype = torch.promote_types(param.dtype, exp_avg.dtype)
    work = param if param.dtype == work_dtype else param.to(work_dtype)
    work.mul_(1.0 - lr * weight_decay)
    direction = exp_avg.mul(beta1).add_(grad, alpha=1.0 - beta1).sign_()
    work.add_(direction, alpha=-lr)
    if work is not param:
        param.copy_(work)
    return exp_avg.mul(beta2).add_(grad, alpha=1.0 - beta2)


class MLorcLion(MLorcOptimizer):
    r"""Lion with its momentum compressed by randomized SVD (MLorc, Algorithm 2).

    From "MLorc: Momentum Low-rank Compression for Large Language Model Adaptation"
    (arXiv 2506.01897), built on Lion from Chen et al., "Symbolic Discovery of
    Optimization Algorithms" (2023). For a weight W viewed as an (m, n) matrix with
    gradient g_t, each step does

    .. math::
        m_{t-1} &= U \operatorname{diag}(S) V^T \\
        c_t &= \operatorname{sign}(\beta_1 m_{t-1} + (1 - \beta_1) g_t) \\
        W_t &= W_{t-1} (1 - \eta\lambda) - \eta \, c_t \\
        m_t &= \beta_2 m_{t-1} + (1 - \beta_2) g_t, \qquad
        (U, S, V) = \operatorname{RSVD}_r(m_t)

    with m_0 = 0 and sign(0) = 0. Weight decay is decoupled as in the Lion paper: the
    weights are scaled by 1 - lr * weight_decay before the signed update. Lion keeps a
    single moment, so its state is half of MLorc-AdamW's. At ``rank = min(m, n)`` the
    randomized SVD is exact and this optimizer matches dense Lion up to rounding, which
    can flip the sign of entries where beta1 * m + (1 - beta1) * g is within rounding of
    zero.

    Parameters that compression cannot help keep dense Lion state (see
    :mod:`mlorc_lab.optim.layout` for the rule); no parameter is ever frozen.

    Parameters
    ----------
    params : iterable
        Parameters, (name, parameter) pairs, or parameter groups. A group may set any
        option below except ``seed``.
    lr : float, default 1e-4
        Learning rate. Every entry moves by lr (plus weight decay) per step, so Lion
        usually takes a smaller learning rate than AdamW.
    betas : (float, float), default (0.9, 0.99)
        beta1 mixes momentum and gradient into the update direction, beta2 is the decay
        rate of the stored momentum, each in [0, 1]. These are the Lion paper's defaults.
    weight_decay : float, default 0.0
        Decoupled weight decay lambda.
    rank : int, default 4
        Rank r of the stored factors.
    oversampling : int, default 0
        Extra random test vectors p of the randomized SVD.
    power_iterations : int, default 0
        Power iterations q of the randomized SVD.
    compress : bool or None, default None
        None applies the size rule; False keeps dense state; True compresses every
        matrix of the group.
    state_dtype : str or None, default None
        Storage dtype of the factors and dense momentum: "float32", "float64",
        "bfloat16" or "float16". None stores fp32 (fp64 for fp64 parameters). The
        arithmetic runs in fp32 whatever this is.
    implementation : {"fast", "compiled", "reference"}, default "fast"
        "reference" follows the update above line by line. "fast" runs the same
        operations in place in one buffer kept between steps, rebuilding the momentum
        twice (once for the direction, once for the new momentum) instead of keeping
        a second full matrix; it differs from the reference only by rounding.
        "compiled" rebuilds once and fuses the elementwise passes into one kernel with
        ``torch.compile`` (see :mod:`mlorc_lab.optim.fused`), compiling on the first
        step (a C++ compiler is needed on CPU).
    orthonormalisation : {"householder", "cholesky"}, default "householder"
        How the fast path orthonormalises the randomized SVD's sketch (see
        :func:`mlorc_lab.optim.fast.orthonormal_basis`); CholeskyQR2 is numerically
        different from the reference's Householder QR.
    seed : int, default 0
        Seed of the per-parameter generators that draw the randomized SVD's test
        matrices; parameter i uses seed * 1000003 + i.

    Examples
    --------
    >>> model = torch.nn.Linear(64, 32)
    >>> optimizer = MLorcLion(model.parameters(), lr=1e-4, rank=4)
    >>> model(torch.randn(8, 64)).square().mean().backward()
    >>> optimizer.step()
    """

    _moment_names = ("exp_avg",)

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        *,
        rank: int = 4,
        oversampling: int = 0,
        power_iterations: int = 0,
        compress: bool | None = None,
        state_dtype: str | None = None,
        implementation: str = "fast",
        orthonormalisation: str = "householder",
        seed: int = 0,
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=betas,
            weight_decay=weight_decay,
            rank=rank,
            oversampling=oversampling,
            power_iterations=power_iterations,
            compress=compress,
            state_dtype=state_dtype,
            implementation=implementation,
            orthonormalisation=orthonormalisation,
        )
        super().__init__(params, defaults, seed=seed)

    def _validate_group(self, group: dict[str, Any]) -> None:
        super()._validate_group(group)
        if len(group["betas"]) != 2:
            raise ValueError(f"Invalid betas: {group['betas']!r}; pass two values (beta1, beta2)")
        for index, beta in enumerate(group["betas"]):
            if not 0.0 <= beta <= 1.0:
                raise ValueError(f"Invalid beta parameter at index {index}: {beta}; it must be in [0, 1]")

    def moment(self, param: torch.Tensor, name: str = "exp_avg") -> torch.Tensor | None:
        """Return the stored momentum of ``param``, rebuilt from its factors if compressed.

        Returns None before the parameter's first step.
        """
        if name not in self._moment_names:
            raise ValueError(f"Unknown moment {name!r}; use one of {self._moment_names}")
        state = self.state.get(param, {})
        if name in state:
            return state[name]
        if f"{name}_U" not in state:
            return None
        factors = LowRankFactors(state[f"{name}_U"], state[f"{name}_S"], state[f"{name}_V"])
        return rebuild_moment(factors, compute_dtype_for(factors.U.dtype)).reshape(param.shape)

    def _options(self, group: dict[str, Any]) -> dict[str, Any]:
        beta1, beta2 = group["betas"]
        return dict(lr=group["lr"], beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"])

    def _update_dense(self, group: dict[str, Any], state: dict[str, Any], param: torch.Tensor) -> None:
        exp_avg = state["exp_avg"]
        work = compute_dtype_for(exp_avg.dtype)
        new_exp_avg = lion_update(
            param, exp_avg.to(work), param.grad.to(work), **self._options(group)
        )
        exp_avg.copy_(new_exp_avg)

    def _update_compressed(self, group: dict[str, Any], state: dict[str, Any], param: torch.Tensor) -> None:
        if group["implementation"] == "fast":
            self._update_compressed_fast(group, state, param)
        elif group["implementation"] == "compiled":
            self._update_compressed_compiled(group, state, param)
        else:
            self._update_compressed_reference(group, state, param)

    def _update_compressed_reference(self, group: dict[str, Any], state: dict[str, Any], param: torch.Tensor) -> None:
        storage = state["exp_avg_U"].dtype
        # The arithmetic runs in fp32 (fp64 for fp64 state) even when the factors are
        # stored in bf16 or fp16, so storage only rounds the factors.
        work = compute_dtype_for(storage)
        view = matrix_shape(param.shape)
        factors = LowRankFactors(state["exp_avg_U"], state["exp_avg_S"], state["exp_avg_V"])
        exp_avg = rebuild_moment(factors, work)
        grad = param.grad.to(work)
        new_exp_avg = lion_update(
            param, exp_avg.reshape(param.shape), grad.reshape(param.shape), **self._options(group)
        ).reshape(view)
        state["exp_avg_U"], state["exp_avg_S"], state["exp_avg_V"] = compress_moment(
            new_exp_avg,
            group["rank"],
            oversampling=group["oversampling"],
            power_iterations=group["power_iterations"],
            generator=self._generator(param),
            storage_dtype=storage,
        )

    def _update_compressed_fast(self, group: dict[str, Any], state: dict[str, Any], param: torch.Tensor) -> None:
        # The operations of lion_update in one workspace buffer. The momentum is rebuilt
        # twice, which costs one skinny product but saves keeping a second full matrix.
        options = self._options(group)
        beta1, beta2 = options["beta1"], options["beta2"]
        storage = state["exp_avg_U"].dtype
        work = compute_dtype_for(storage)
        view = matrix_shape(param.shape)
        grad = param.grad.reshape(view).to(work)
        factors = LowRankFactors(state["exp_avg_U"], state["exp_avg_S"], state["exp_avg_V"])
        buffer = self._workspace.buffer("exp_avg", view, work, param.device)
        first = state["step"] == 1  # the factors of step 0 rebuild to zero

        weight = param if param.dtype == work else param.to(work)
        weight.mul_(1.0 - options["lr"] * options["weight_decay"])
        direction = buffer.zero_() if first else rebuild_into(buffer, factors)
        direction.mul_(beta1).add_(grad, alpha=1.0 - beta1).sign_()
        weight.add_(direction.view(param.shape), alpha=-options["lr"])
        if weight is not param:
            param.copy_(weight)

        momentum = buffer.zero_() if first else rebuild_into(buffer, factors)
        momentum.mul_(beta2).add_(grad, alpha=1.0 - beta2)
        self._compress_momentum(group, state, param, momentum)

    def _update_compressed_compiled(self, group: dict[str, Any], state: dict[str, Any], param: torch.Tensor) -> None:
        # One rebuild and one fused kernel (fused.lion_step_) in place of the fast
        # path's two rebuilds and five elementwise passes.
        options = self._options(group)
        work = compute_dtype_for(state["exp_avg_U"].dtype)
        view = matrix_shape(param.shape)
        grad = param.grad.reshape(view).to(work)
        momentum = self._workspace.buffer("exp_avg", view, work, param.device)
        if state["step"] == 1:  # the factors of step 0 rebuild to zero
            momentum.zero_()
        else:
            rebuild_into(momentum, self._factors(state, "exp_avg"))
        lion_step_(
            param.detach(),
            momentum.view(param.shape),
            grad.view(param.shape),
            options["lr"],
            options["beta1"],
            options["beta2"],
            options["weight_decay"],
        )
        self._compress_momentum(group, state, param, momentum)

    def _compress_momentum(
        self, group: dict[str, Any], state: dict[str, Any], param: torch.Tensor, momentum: torch.Tensor
    ) -> None:
        new_factors = randomized_svd_fast(
            momentum,
            group["rank"],
            oversampling=group["oversampling"],
            power_iterations=group["power_iterations"],
            generator=self._generator(param),
            orthonormalisation=group["orthonormalisation"],
        )
        storage = state["exp_avg_U"].dtype
        state["exp_avg_U"], state["exp_avg_S"], state["exp_avg_V"] = (t.to(storage) for t in new_factors)
