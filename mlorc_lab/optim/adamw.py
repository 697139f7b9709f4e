"""MLorc-AdamW: AdamW whose moments are stored as randomized-SVD factors."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from mlorc_lab.linalg import LowRankFactors, compute_dtype_for
from mlorc_lab.optim.base import MLorcOptimizer, bias_corrections
from mlorc_lab.optim.compression import compress_moment, fix_negative_entries, rebuild_moment
from mlorc_lab.optim.fast import fix_negative_entries_, randomized_svd_fast, rebuild_into
from mlorc_lab.optim.fused import adamw_moments_, adamw_weights_
from mlorc_lab.optim.layout import matrix_shape

__all__ = ["MLorcAdamW", "adamw_update"]


def adamw_update(
    param: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    *,
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    overwrite_second_moment: bool = False,
) -> None:
    """Step ``param`` in place with this step's full moments, as torch.optim.AdamW does.

    The order of operations mirrors ``torch.optim.AdamW``'s single-tensor path, so that a
    full-rank run matches it to rounding. For half-precision parameters the update is
    computed in fp32 and rounded once when written back. With
    ``overwrite_second_moment=True`` the denominator is computed in ``exp_avg_sq``'s own
    memory, which saves a full-size temporary; the fast path uses this after both
    moments have been compressed.
    """
    # fp64 state steps fp64 weights in fp64, and fp32 state steps half-precision
    # weights in fp32, so the weights are rounded only once, when written back.
    work_dtype = torch.promote_types(param.dtype, exp_avg.dtype)
    work = param if param.dtype == work_dtype else param.to(work_dtype)
    work.mul_(1.0 - lr * weight_decay)
    bias_correction1, bias_correction2_sqrt = bias_corrections(step, beta1, beta2)
    if overwrite_second_moment:
        denominator = exp_avg_sq.sqrt_().div_(bias_correction2_sqrt).add_(eps)
    else:
        denominator = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
    work.addcdiv_(exp_avg, denominator, value=-lr / bias_correction1)
    if work is not param:
        param.copy_(work)


class MLorcAdamW(MLorcOptimizer):
    r"""AdamW with both moments compressed by randomized SVD (MLorc, Algorithm 1).

    From "MLorc: Momentum Low-rank Compression for Large Language Model Adaptation"
    (arXiv 2506.01897). For a weight W viewed as an (m, n) matrix with gradient g_t,
    each step does

    .. math::
        m_{t-1} &= U_m \operatorname{diag}(S_m) V_m^T, \qquad
        v_{t-1} = \operatorname{fix}(U_v \operatorname{diag}(S_v) V_v^T) \\
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t, \qquad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
        (U_m, S_m, V_m) &= \operatorname{RSVD}_r(m_t), \qquad
        (U_v, S_v, V_v) = \operatorname{RSVD}_r(v_t) \\
        W_t &= W_{t-1} (1 - \eta\lambda)
              - \eta \, \frac{m_t / (1 - \beta_1^t)}{\sqrt{v_t / (1 - \beta_2^t)} + \epsilon}

    where fix() replaces each negative entry of the rebuilt v by the mean absolute value
    of the negative entries (the negative-v fix), and m_0 = v_0 = 0. The weights step
    with this step's full m_t and v_t; only their factors are kept for the next step.

    eps and weight decay follow ``torch.optim.AdamW``: eps is added outside the square
    root of the bias-corrected v, and weight decay is decoupled, W <- W (1 - lr *
    weight_decay) before the update. The paper writes the decay inside the bracket
    multiplied by the learning rate, which is the same update. At ``rank = min(m, n)``
    the randomized SVD is exact and this optimizer matches ``torch.optim.AdamW``.

    Parameters that compression cannot help keep dense AdamW state (see
    :mod:`mlorc_lab.optim.layout` for the rule); no parameter is ever frozen.

    Parameters
    ----------
    params : iterable
        Parameters, (name, parameter) pairs, or parameter groups. A group may set any
        option below except ``seed``.
    lr : float, default 1e-3
        Learning rate.
    betas : (float, float), default (0.9, 0.999)
        Decay rates of the first and second moments, each in [0, 1). The paper uses
        beta1 = 0.8 for its fine-tuning runs.
    eps : float, default 1e-8
        Term added to the denominator.
    weight_decay : float, default 1e-2
        Decoupled weight decay, as in ``torch.optim.AdamW``.
    rank : int, default 4
        Rank r of the stored factors (the paper's default for fine-tuning).
    oversampling : int, default 0
        Extra random test vectors p of the randomized SVD (the paper uses 0).
    power_iterations : int, default 0
        Power iterations q of the randomized SVD (the paper uses 0).
    compress : bool or None, default None
        None applies the size rule; False keeps dense state; True compresses every
        matrix of the group.
    state_dtype : str or None, default None
        Storage dtype of factors and dense moments: "float32", "float64", "bfloat16" or
        "float16". None stores fp32 (fp64 for fp64 parameters). The arithmetic of the
        update and of the randomized SVD runs in fp32 whatever this is.
    implementation : {"fast", "compiled", "reference"}, default "fast"
        "reference" follows the update above line by line, creating each intermediate
        as a new tensor. "fast" runs the same operations in place in buffers kept
        between steps (see :mod:`mlorc_lab.optim.fast`); it differs from the reference
        only by rounding, and keeps one full matrix per moment of the largest
        compressed parameter on CPU (:meth:`workspace_bytes`). "compiled" is "fast"
        with the elementwise passes fused by ``torch.compile`` (see
        :mod:`mlorc_lab.optim.fused`). On CPU it took 0.7 to 0.85 of the fast step's
        time on large matrices, after compiling on the first step (a C++ compiler is
        needed there).
    orthonormalisation : {"householder", "cholesky"}, default "householder"
        How the fast path orthonormalises the randomized SVD's sketch: Householder QR,
        as the reference, or CholeskyQR2, which is numerically different (see
        :func:`mlorc_lab.optim.fast.orthonormal_basis`). The reference path always
        uses Householder QR.
    seed : int, default 0
        Seed of the per-parameter generators that draw the randomized SVD's test
        matrices; parameter i uses seed * 1000003 + i. Saved in the state dict.

    Examples
    --------
    >>> model = torch.nn.Linear(64, 32)
    >>> optimizer = MLorcAdamW(model.parameters(), lr=1e-3, rank=4)
    >>> model(torch.randn(8, 64)).square().mean().backward()
    >>> optimizer.step()
    """

    _moment_names = ("exp_avg", "exp_avg_sq")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
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
            eps=eps,
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
        beta1, beta2 = group["betas"]
        if not 0.0 <= beta1 < 1.0:
            raise ValueError(f"Invalid beta parameter at index 0: {beta1}; it must be in [0, 1)")
        if not 0.0 <= beta2 < 1.0:
            raise ValueError(f"Invalid beta parameter at index 1: {beta2}; it must be in [0, 1)")
        if not 0.0 <= group["eps"]:
            raise ValueError(f"Invalid epsilon value: {group['eps']}; it must be >= 0")

    def moment(self, param: torch.Tensor, name: str) -> torch.Tensor | None:
        """Return the stored moment ``name`` ("exp_avg" or "exp_avg_sq") of ``param``.

        A compressed moment is rebuilt from its factors (without the negative-v fix,
        so its spectrum is that of the stored factors); a dense one is returned as is.
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
        work = compute_dtype_for(factors.U.dtype)
        return rebuild_moment(factors, work).reshape(param.shape)

    @staticmethod
    def _options(group: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
        beta1, beta2 = group["betas"]
        return dict(
            step=state["step"],
            lr=group["lr"],
            beta1=beta1,
            beta2=beta2,
            eps=group["eps"],
            weight_decay=group["weight_decay"],
        )

    def _update_dense(self, group: dict[str, Any], state: dict[str, Any], param: torch.Tensor) -> None:
        options = self._options(group, state)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        work = compute_dtype_for(exp_avg.dtype)
        grad = param.grad.to(work)
        m = exp_avg.to(work)
        v = exp_avg_sq.to(work)
        m.lerp_(grad, 1.0 - options["beta1"])
        v.mul_(options["beta2"]).addcmul_(grad, grad, value=1.0 - options["beta2"])
        adamw_update(param, m, v, **options)
        if m is not exp_avg:
            exp_avg.copy_(m)
            exp_avg_sq.copy_(v)

    def _update_compressed(self, group: dict[str, Any], state: dict[str, Any], param: torch.Tensor) -> None:
        if group["implementation"] == "reference":
            self._update_compressed_reference(group, state, param)
        else:
            self._update_compressed_fast(group, state, param, compiled=group["implementation"] == "compiled")

    def _update_compressed_reference(self, group: dict[str, Any], state: dict[str, Any], param: torch.Tensor) -> None:
        options = self._options(group, state)
        storage = state["exp_avg_U"].dtype
        # NOTE: the arithmetic runs in fp32 (fp64 for fp64 state) even when the
        # factors are stored in bf16 or fp16, so storage only rounds the factors.
        work = compute_dtype_for(storage)
        view = matrix_shape(param.shape)
        grad = param.grad.reshape(view).to(work)
        m = self._rebuild(state, "exp_avg", work)
        v = self._rebuild(state, "exp_avg_sq", work)
        if options["step"] > 1:
            _, state["negative_v_fraction"], state["negative_v_fill"] = fix_negative_entries(v)

        m.lerp_(grad, 1.0 - options["beta1"])
        v.mul_(options["beta2"]).addcmul_(grad, grad, value=1.0 - options["beta2"])

        generator = self._generator(param)
        for name, moment in (("exp_avg", m), ("exp_avg_sq", v)):
            factors = compress_moment(
                moment,
                group["rank"],
                oversampling=group["oversampling"],
                power_iterations=group["power_iterations"],
                generator=generator,
                storage_dtype=storage,
            )
            state[f"{name}_U"], state[f"{name}_S"], state[f"{name}_V"] = factors
        adamw_update(param, m.reshape(param.shape), v.reshape(param.shape), **options)

    def _update_compressed_fast(
        self, group: dict[str, Any], state: dict[str, Any], param: torch.Tensor, *, compiled: bool = False
    ) -> None:
        # The operations of _update_compressed_reference, in place in two workspace
        # buffers; every full-size tensor below is one of them (or the gradient).
        # ``compiled`` runs the elementwise passes as the fused kernels of fused.py.
        options = self._options(group, state)
        beta1, beta2 = options["beta1"], options["beta2"]
        storage = state["exp_avg_U"].dtype
        work = compute_dtype_for(storage)
        view = matrix_shape(param.shape)
        grad = param.grad.reshape(view).to(work)
        m = self._workspace.buffer("exp_avg", view, work, param.device)
        v = self._workspace.buffer("exp_avg_sq", view, work, param.device)

        if compiled:
            if options["step"] > 1:
                rebuild_into(v, self._factors(state, "exp_avg_sq"))
                rebuild_into(m, self._factors(state, "exp_avg"))
            else:
                m.zero_()
                v.zero_()
            fraction, fill = adamw_moments_(m, v, grad, beta1, beta2)
            if options["step"] > 1:
                state["negative_v_fraction"], state["negative_v_fill"] = fraction, fill
        elif options["step"] > 1:
            rebuild_into(v, self._factors(state, "exp_avg_sq"))
            state["negative_v_fraction"], state["negative_v_fill"] = fix_negative_entries_(v, scratch=m)
            rebuild_into(m, self._factors(state, "exp_avg"))
            m.lerp_(grad, 1.0 - beta1)
            v.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
        else:
            # The factors of step 0 rebuild to zero; the zero fill skips the product.
            m.zero_().lerp_(grad, 1.0 - beta1)
            v.zero_().addcmul_(grad, grad, value=1.0 - beta2)

        generator = self._generator(param)
        for name, moment in (("exp_avg", m), ("exp_avg_sq", v)):
            factors = randomized_svd_fast(
                moment,
                group["rank"],
                oversampling=group["oversampling"],
                power_iterations=group["power_iterations"],
                generator=generator,
                orthonormalisation=group["orthonormalisation"],
            )
            state[f"{name}_U"], state[f"{name}_S"], state[f"{name}_V"] = (t.to(storage) for t in factors)
        if compiled:
            bias_correction1, bias_correction2_sqrt = bias_corrections(options["step"], beta1, beta2)
            adamw_weights_(
                param.detach(),
                m.view(param.shape),
                v.view(param.shape),
                options["lr"],
                options["weight_decay"],
                bias_correction1,
                bias_correction2_sqrt,
                options["eps"],
            )
        else:
            adamw_update(param, m.view(param.shape), v.view(param.shape), overwrite_second_moment=True, **options)

    @staticmethod
    def _rebuild(state: dict[str, Any], name: str, work: torch.dtype) -> torch.Tensor:
        factors = LowRankFactors(state[f"{name}_U"], state[f"{name}_S"], state[f"{name}_V"])
        return rebuild_moment(factors, work)
