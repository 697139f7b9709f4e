"""Bookkeeping shared by the MLorc optimizers: validation, generators, state, checks.

The arithmetic of each optimizer lives in its own module; this base class only
validates options, assigns every parameter a stable index and its own seeded
``torch.Generator``, keeps optimizer state loadable with
``torch.load(weights_only=True)`` and rejects gradients that cannot be used.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch.optim import Optimizer

from mlorc_lab.linalg import LowRankFactors
from mlorc_lab.optim.fast import ORTHONORMALISATIONS, Workspace
from mlorc_lab.optim.layout import matrix_shape, should_compress

__all__ = ["IMPLEMENTATIONS", "MLorcOptimizer", "NonFiniteGradientError", "STATE_DTYPES"]

# "fast" runs the update in place in reused buffers; "reference" is the plain
# line-by-line transcription of the algorithm that the fast path is tested against.
IMPLEMENTATIONS = ("fast", "compiled", "reference")

# Storage dtypes a parameter group may ask for, by name: names (not torch.dtype
# objects) keep param_groups plain strings and numbers in a checkpoint.
STATE_DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}

# Multiplier that spreads per-parameter seeds apart (a large prime, so that seeds of
# neighbouring optimizers do not reuse each other's streams for small indices).
_SEED_STRIDE = 1_000_003
_RNG_STATE_KEY = "rng_state"


class NonFiniteGradientError(ValueError):
    """A gradient with inf or NaN entries reached an MLorc optimizer."""


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"Invalid {name}: {value!r}; {name} must be an integer >= {minimum}")


class MLorcOptimizer(Optimizer):
    """Base class of :class:`MLorcAdamW` and :class:`MLorcLion`.

    Subclasses define ``_moment_names``, the state keys of the moments. Each moment is
    stored as factors ``<name>_U``, ``<name>_S``, ``<name>_V`` or densely as ``<name>``.
    Subclasses also add to ``_validate_group`` and implement ``_update_dense`` and
    ``_update_compressed``, while this class creates the state, counts steps and checks
    gradients.
    """

    _moment_names: tuple[str, ...] = ()

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any], *, seed: int = 0) -> None:
        _check_int("seed", seed, 0)
        self.seed = seed
        self._param_index: dict[torch.Tensor, int] = {}
        self._generators: dict[torch.Tensor, torch.Generator] = {}
        # Parameter -> its group, rebuilt when groups are added or replaced by loading.
        self._group_cache: dict[torch.Tensor, dict[str, Any]] = {}
        self._workspace = Workspace()
        super().__init__(params, defaults)

    # ------------------------------------------------------------------ options

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        self._group_cache.clear()
        group = self.param_groups[-1]
        self._validate_group(group)
        for param in group["params"]:
            if param not in self._param_index:
                self._param_index[param] = len(self._param_index)

    def _validate_group(self, group: dict[str, Any]) -> None:
        lr = group["lr"]
        if isinstance(lr, torch.Tensor):
            lr = lr.item()
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}; lr must be >= 0")
        if not 0.0 <= group["weight_decay"]:
            raise ValueError(f"Invalid weight_decay value: {group['weight_decay']}; it must be >= 0")
        _check_int("rank", group["rank"], 1)
        _check_int("oversampling", group["oversampling"], 0)
        _check_int("power_iterations", group["power_iterations"], 0)
        if group["compress"] not in (None, True, False):
            raise ValueError(f"Invalid compress: {group['compress']!r}; use None (size rule), True or False")
        if group["implementation"] not in IMPLEMENTATIONS:
            raise ValueError(
                f"Invalid implementation: {group['implementation']!r}; use one of {IMPLEMENTATIONS}"
            )
        if group["orthonormalisation"] not in ORTHONORMALISATIONS:
            raise ValueError(
                f"Invalid orthonormalisation: {group['orthonormalisation']!r}; use one of {ORTHONORMALISATIONS}"
            )
        if group["state_dtype"] is not None and group["state_dtype"] not in STATE_DTYPES:
            raise ValueError(
                f"Invalid state_dtype: {group['state_dtype']!r}; use None or one of {sorted(STATE_DTYPES)}"
            )
        for param in group["params"]:
            self._check_parameter(param)
            # Checked here so that a bad forced rank fails at construction, not at step 1.
            should_compress(param.shape, group["rank"], group["compress"])

    def _check_parameter(self, param: torch.Tensor) -> None:
        """Reject at construction the parameters no update rule here can handle."""
        if _is_dtensor(param):
            raise TypeError(
                f"{type(self).__name__} does not support DTensor parameters "
                f"(parameter of shape {tuple(param.shape)}, placements {param.placements}): "
                "FSDP2 (fully_shard) shards every matrix across ranks, and the randomized SVD "
                "needs the whole moment. Use DistributedDataParallel, or give each rank the full "
                "parameters."
            )
        if param.is_complex():
            raise TypeError(
                f"{type(self).__name__} does not support complex parameters "
                f"(shape {tuple(param.shape)}, dtype {param.dtype}); register the real view "
                "torch.view_as_real(param) as the parameter instead"
            )
        if not param.is_floating_point():
            raise TypeError(
                f"{type(self).__name__} expects floating-point parameters, got dtype {param.dtype} "
                f"for a parameter of shape {tuple(param.shape)}"
            )

    # ------------------------------------------------------------ per parameter

    def _state_dtype(self, group: dict[str, Any], param: torch.Tensor) -> torch.dtype:
        """Return the dtype that factors and dense moments of ``param`` are stored in.

        The default is fp32, or fp64 for fp64 parameters; half-precision parameters
        keep fp32 state unless the group sets ``state_dtype``.
        """
        if group["state_dtype"] is not None:
            return STATE_DTYPES[group["state_dtype"]]
        return torch.promote_types(param.dtype, torch.float32)

    @staticmethod
    def _factors(state: dict[str, Any], name: str) -> LowRankFactors:
        """Return the stored factors of moment ``name`` from a parameter's state."""
        return LowRankFactors(state[f"{name}_U"], state[f"{name}_S"], state[f"{name}_V"])

    def _generator(self, param: torch.Tensor) -> torch.Generator:
        """Return the parameter's generator, created on its device on first use.

        Its seed depends only on the optimizer seed and the parameter's index, so every
        process of a data-parallel run draws the same test matrices.
        """
        generator = self._generators.get(param)
        if generator is None:
            generator = torch.Generator(device=param.device)
            saved = self.state[param].get(_RNG_STATE_KEY)
            if saved is not None:
                generator.set_state(saved.cpu())
            else:
                generator.manual_seed((self.seed * _SEED_STRIDE + self._param_index[param]) % (2**63))
            self._generators[param] = generator
        return generator

    def is_compressed(self, param: torch.Tensor) -> bool:
        """Return whether ``param`` stores its moments as factors (after its first step)."""
        state = self.state.get(param, {})
        return f"{self._moment_names[0]}_U" in state

    def parameter_name(self, param: torch.Tensor) -> str:
        """Return the name given with ``named_parameters()``, else 'parameter <index>'."""
        for group in self.param_groups:
            names = group.get("param_names")
            if names is None:
                continue
            for candidate, name in zip(group["params"], names):
                if candidate is param:
                    return name
        return f"parameter {self._param_index.get(param, '?')} of shape {tuple(param.shape)}"

    def _init_state(self, group: dict[str, Any], param: torch.Tensor) -> dict[str, Any]:
        from mlorc_lab.optim.compression import zero_factors

        state = self.state[param]
        state["step"] = 0
        dtype = self._state_dtype(group, param)
        view = matrix_shape(param.shape)
        if should_compress(param.shape, group["rank"], group["compress"]):
            for name in self._moment_names:
                u, s, v = zero_factors(view, group["rank"], dtype, param.device)
                state[f"{name}_U"], state[f"{name}_S"], state[f"{name}_V"] = u, s, v
        else:
            for name in self._moment_names:
                state[name] = torch.zeros(param.shape, dtype=dtype, device=param.device)
        return state

    def _check_gradient(self, param: torch.Tensor) -> None:
        grad = param.grad
        if grad.is_sparse:
            raise TypeError(
                f"{type(self).__name__} does not support sparse gradients "
                f"({self.parameter_name(param)}); use a dense embedding (sparse=False)"
            )
        if grad.is_complex():
            raise TypeError(
                f"{type(self).__name__} does not support complex parameters "
                f"({self.parameter_name(param)}, dtype {grad.dtype}); view them as real with torch.view_as_real"
            )
        if grad.shape != param.shape:
            raise ValueError(
                f"Gradient shape {tuple(grad.shape)} does not match parameter shape {tuple(param.shape)} "
                f"for {self.parameter_name(param)}"
            )

    def _check_finite(self, params: list[torch.Tensor]) -> None:
        """Raise before any update when a gradient contains inf or NaN.

        All gradients are checked first so that a bad one leaves every weight and every
        state untouched. ``torch.amp.GradScaler`` skips such steps itself, so this only
        fires for gradients that reach the optimizer without a scaler.
        """
        if not params:
            return
        finite = torch.stack([_all_finite(p.grad).to("cpu") for p in params])
        if bool(finite.all()):
            return
        bad = params[int((~finite).nonzero()[0])]
        step = self.state[bad].get("step", 0) + 1
        raise NonFiniteGradientError(
            f"Non-finite gradient (inf or NaN) for {self.parameter_name(bad)} at optimizer step {step}; "
            "weights and state are unchanged. Lower the learning rate, clip gradients, or use "
            "torch.amp.GradScaler, which skips such steps."
        )

    # --------------------------------------------------------------------- step

    def _parameters_with_gradients(self) -> list[tuple[dict[str, Any], torch.Tensor]]:
        pairs = []
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    self._check_gradient(param)
                    pairs.append((group, param))
        return pairs

    @torch.no_grad()
    def step(self, closure=None):
        """Perform one optimization step over every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        pairs = self._parameters_with_gradients()
        self._check_finite([param for _, param in pairs])
        for group, param in pairs:
            with _autocast_disabled(param.device.type):
                self._update_parameter(group, param)
        return loss

    @torch.no_grad()
    def step_parameter(self, param: torch.Tensor) -> None:
        """Step one parameter alone with its current gradient (the per-layer mode).

        The gradient checks of :meth:`step` apply to this parameter only, so a
        non-finite gradient leaves this parameter and its state untouched, while
        parameters stepped before it keep their update.

        Raises
        ------
        ValueError
            When ``param`` is not in any parameter group or has no gradient.
        """
        group = self._group_of(param)
        if param.grad is None:
            raise ValueError(f"{self.parameter_name(param)} has no gradient to step with")
        self._check_gradient(param)
        self._check_finite([param])
        with _autocast_disabled(param.device.type):
            self._update_parameter(group, param)

    def _group_of(self, param: torch.Tensor) -> dict[str, Any]:
        if not self._group_cache:
            self._group_cache = {candidate: group for group in self.param_groups for candidate in group["params"]}
        group = self._group_cache.get(param)
        if group is not None:
            return group
        raise ValueError(
            f"The parameter of shape {tuple(param.shape)} is not in any parameter group of this "
            f"{type(self).__name__}; pass it to the optimizer first"
        )

    def _update_parameter(self, group: dict[str, Any], param: torch.Tensor) -> None:
        """Create the state on first use, count the step and apply the update rule."""
        state = self.state[param]
        if "step" not in state:
            self._init_state(group, param)
        state["step"] += 1
        if self._moment_names[0] in state:
            self._update_dense(group, state, param)
        else:
            self._update_compressed(group, state, param)

    def _update_dense(self, group: dict[str, Any], state: dict[str, Any], param: torch.Tensor) -> None:
        raise NotImplementedError

    def _update_compressed(self, group: dict[str, Any], state: dict[str, Any], param: torch.Tensor) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------- memory

    def state_bytes(self) -> dict[str | int, dict[str, int]]:
        """Return, per parameter, the bytes its moments take as factors and as dense state.

        Keys are the names given with ``named_parameters()``, else the parameter's index
        in the order the parameter groups list them. Each value is ``{"compressed": int,
        "dense": int}``: the bytes of the factor tensors ``<moment>_U``, ``_S``, ``_V``
        and of the dense moment tensors. A parameter with factors has 0 dense bytes and
        the other way round, and a parameter not yet stepped has 0 for both.

        Only moments are counted: the ``step`` counter, the generator state
        ``rng_state`` (5056 bytes for a CPU generator, 16 for a CUDA one) and the 0-d
        ``negative_v_fraction`` and ``negative_v_fill`` are left out.
        """
        report: dict[str | int, dict[str, int]] = {}
        for group in self.param_groups:
            names = group.get("param_names")
            for position, param in enumerate(group["params"]):
                key = names[position] if names is not None else self._param_index[param]
                state = self.state.get(param, {})
                compressed = 0
                dense = 0
                for name in self._moment_names:
                    if name in state:
                        dense += _tensor_bytes(state[name])
                    for suffix in ("_U", "_S", "_V"):
                        if name + suffix in state:
                            compressed += _tensor_bytes(state[name + suffix])
                report[key] = {"compressed": compressed, "dense": dense}
        return report

    def workspace_bytes(self) -> int:
        """Return the bytes of the full-size buffers the fast path keeps between steps.

        On CPU the ``implementation="fast"`` path keeps one full matrix per moment of
        the largest compressed parameter it has stepped (two for MLorc-AdamW, one for
        MLorc-Lion), so that no step allocates full-size temporaries. On other devices
        it keeps nothing and this returns 0.
        """
        return self._workspace.nbytes()

    def release_workspace(self) -> None:
        """Free the fast path's buffers, for example before evaluation; steps recreate them."""
        self._workspace.clear()

    # --------------------------------------------------------------- state dict

    def state_dict(self) -> dict[str, Any]:
        """Return the state dict, with each parameter's generator state saved in it.

        Everything in it is a tensor, a number, a string or None, so it loads with
        ``torch.load(weights_only=True)``.
        """
        for param, generator in self._generators.items():
            self.state[param][_RNG_STATE_KEY] = generator.get_state()
        return super().state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict, keeping the saved dtypes and values of every state tensor.

        ``torch.optim.Optimizer.load_state_dict`` casts every floating-point state
        tensor to its parameter's dtype, which would round fp32 factors of a bf16
        parameter to bf16 and corrupt the uint8 generator states. The saved tensors are
        therefore copied in afterwards, moved only to the parameter's device (generator
        states stay on the CPU, where ``Generator.set_state`` wants them). Group options
        missing from an older state dict are filled in from this optimizer's defaults.
        """
        saved_tensors = {
            index: {key: value for key, value in param_state.items() if isinstance(value, torch.Tensor)}
            for index, param_state in state_dict["state"].items()
        }
        super().load_state_dict(state_dict)
        saved_ids = [index for group in state_dict["param_groups"] for index in group["params"]]
        params = [param for group in self.param_groups for param in group["params"]]
        for index, param in zip(saved_ids, params):
            for key, value in saved_tensors.get(index, {}).items():
                device = "cpu" if key == _RNG_STATE_KEY else param.device
                self.state[param][key] = value.to(device=device, copy=True)
        self._group_cache.clear()
        for group in self.param_groups:
            for key, value in self.defaults.items():
                group.setdefault(key, value)
        self._generators.clear()

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._group_cache = {}
        self._workspace = Workspace()
        for group in self.param_groups:
            for key, value in self.defaults.items():
                group.setdefault(key, value)


def _all_finite(tensor: torch.Tensor) -> torch.Tensor:
    """Return a 0-d bool tensor, True when no entry of ``tensor`` is inf or NaN.

    ``torch.aminmax`` propagates NaN and reads the tensor once without allocating;
    ``isfinite(tensor).all()`` would allocate a full bool tensor, which on CPU cost
    about as much as a whole AdamW step for a 2048 x 5504 gradient.
    """
    if tensor.numel() == 0:
        return torch.ones((), dtype=torch.bool, device=tensor.device)
    smallest, largest = torch.aminmax(tensor)
    return torch.isfinite(smallest) & torch.isfinite(largest)


def _tensor_bytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def _is_dtensor(param: torch.Tensor) -> bool:
    if not torch.distributed.is_available():
        return False
    from torch.distributed.tensor import DTensor

    return isinstance(param, DTensor)


@contextlib.contextmanager
def _autocast_disabled(device_type: str) -> Iterator[None]:
    """Run the update outside autocast, which would turn the randomized SVD's products
    into bf16 or fp16 when ``optimizer.step()`` is called inside an autocast region."""
    if torch.amp.is_autocast_available(device_type):
        with torch.autocast(device_type=device_type, enabled=False):
            yield
    else:
        yield


def bias_corrections(step: int, beta1: float, beta2: float) -> tuple[float, float]:
    """Return Adam's bias corrections 1 - beta1**t and sqrt(1 - beta2**t)."""
    return 1.0 - beta1**step, math.sqrt(1.0 - beta2**step)
