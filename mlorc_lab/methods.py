"""The method registry: one place that builds the model and optimizer of each method.

Every runner and notebook builds its optimizer here, so a method means the same thing
everywhere. ``build_method`` returns the (possibly wrapped) model and its optimizer.

Methods
-------
full-adamw
    ``torch.optim.AdamW`` on every parameter.
mlorc-adamw
    :class:`mlorc_lab.optim.MLorcAdamW` on every parameter (beta1 = 0.8 by default).
lora
    peft LoRA on the attention and MLP projections (:func:`adapted_module_names`);
    only the adapters, and on sequence classification the classifier head, train.
lora-full
    LoRA as above plus every parameter that is not an adapted base weight (the
    embeddings, norms, biases and heads), the MLorc paper's "LoRA (Full)" column.
galore
    ``galore_torch.GaLoreAdamW``: the weights of the adapted modules get low-rank
    gradient projection, every other parameter plain Adam. Every parameter trains.
full-lion
    ``lion_pytorch.Lion`` on every parameter.
mlorc-lion
    :class:`mlorc_lab.optim.MLorcLion` on every parameter.

Full, MLorc and GaLore train the same parameters (all of them); on sequence
classification every method, LoRA included, trains the classifier head.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from mlorc_lab.optim import MLorcAdamW

__all__ = [
    "LION_BETAS",
    "METHODS",
    "check_method",
    "MethodOptions",
    "adapted_module_names",
    "build_method",
    "classifier_head_name",
    "is_sequence_classifier",
]

# The betas the MLorc authors' training script passes to lion_pytorch.Lion
# (weishen-git/MLorc, NLG/train_math.py). lion_pytorch's convention: beta1 mixes the
# momentum with the gradient for the sign update, beta2 is the momentum's decay rate.
LION_BETAS = (0.95, 0.98)

# Projection layers adapted by LoRA and projected by GaLore, by architecture family.
# LLaMA (SmolLM2, Llama 2): the attention and MLP projections. BERT and RoBERTa:
# attention query/key/value, the attention output dense layer, the intermediate
# dense layer and the layer output dense layer (not the pooler).
_ADAPTED_PATTERNS = {
    "llama": re.compile(r"(^|\.)(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$"),
    "bert": re.compile(
        r"(^|\.)(attention\.self\.(query|key|value)|attention\.output\.dense|intermediate\.dense|layer\.\d+\.output\.dense)$"
    ),
}

# Names of the freshly initialised classification heads of transformers' sequence
# classifiers: BERT and RoBERTa use "classifier", LLaMA uses "score".
_HEAD_NAMES = ("classifier", "score")


@dataclass(frozen=True)
class MethodOptions:
    """Hyperparameters shared by the methods; each method reads the ones it uses.

    Attributes
    ----------
    learning_rate : float
        Peak learning rate.
    weight_decay : float, default 0.0
        Decoupled weight decay.
    betas : (float, float) or None, default None
        None takes each optimizer's default: (0.9, 0.999) for AdamW, LoRA and
        GaLore, (0.8, 0.999) for MLorc-AdamW, :data:`LION_BETAS` for both Lions.
    rank : int, default 4
        Rank of MLorc's factors and of GaLore's projection.
    oversampling : int, default 0
        MLorc's randomized-SVD oversampling.
    seed : int, default 0
        Seed of MLorc's randomized-SVD test matrices.
    lora_rank : int, default 4
        LoRA r. The MLorc paper uses 4 for the causal LM and 8 on GLUE.
    lora_alpha : float, default 16.0
        LoRA alpha; the update is scaled by alpha / r.
    lora_dropout : float, default 0.0
        Dropout on the LoRA input. 0 keeps LoRA's loss curve free of extra noise
        against the other methods, none of which add dropout.
    galore_update_gap : int, default 300
        Steps between GaLore's projection updates (T). The MLorc paper uses 300 for
        the causal LM and 50 on GLUE.
    galore_scale : float, default 0.25
        Factor on GaLore's projected-back update (alpha in the GaLore paper).
        galore_torch's projector defaults to 1.0, so pass it explicitly.
    mlorc_implementation : {"fast", "compiled", "reference"}, default "fast"
        The ``implementation`` option of MLorcAdamW and MLorcLion.
    """

    learning_rate: float
    weight_decay: float = 0.0
    betas: tuple[float, float] | None = None
    rank: int = 4
    oversampling: int = 0
    seed: int = 0
    lora_rank: int = 4
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    galore_update_gap: int = 300
    galore_scale: float = 0.25
    mlorc_implementation: str = "fast"


Builder = Callable[[torch.nn.Module, MethodOptions], tuple[torch.nn.Module, Any]]


def is_sequence_classifier(model: torch.nn.Module) -> bool:
    """Return True for a transformers ``...ForSequenceClassification`` model."""
    return type(model).__name__.endswith("ForSequenceClassification")


def classifier_head_name(model: torch.nn.Module) -> str:
    """Return the name of the classification head of a sequence classifier.

    Raises
    ------
    ValueError
        If the model has none of the known head modules ("classifier", "score").
    """
    children = dict(model.named_children())
    for name in _HEAD_NAMES:
        if name in children:
            return name
    raise ValueError(
        f"No classification head found in {type(model).__name__}; expected a child module named "
        f"one of {', '.join(_HEAD_NAMES)}"
    )


def adapted_module_names(model: torch.nn.Module) -> list[str]:
    """Return the full names of the linear layers LoRA adapts and GaLore projects.

    The names are found by matching module names against the LLaMA projection names
    (q, k, v, o, gate, up, down) and the BERT names (query, key, value, attention
    output dense, intermediate dense, layer output dense).

    Raises
    ------
    ValueError
        If no ``torch.nn.Linear`` module of the model matches either family.
    """
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        if any(pattern.search(name) for pattern in _ADAPTED_PATTERNS.values()):
            names.append(name)
    if not names:
        raise ValueError(
            f"No attention or MLP projection found in {type(model).__name__}; the registry knows "
            "LLaMA names (q_proj ... down_proj) and BERT names (query, key, value, *.dense)"
        )
    return names


def _full_adamw(model: torch.nn.Module, options: MethodOptions) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    betas = options.betas or (0.9, 0.999)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=options.learning_rate, betas=betas, weight_decay=options.weight_decay
    )
    return model, optimizer


def _mlorc_optimizer(
    optimizer_class: type, model: torch.nn.Module, options: MethodOptions, default_betas: tuple[float, float]
) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    optimizer = optimizer_class(
        model.named_parameters(),
        lr=options.learning_rate,
        betas=options.betas or default_betas,
        weight_decay=options.weight_decay,
        rank=options.rank,
        oversampling=options.oversampling,
        implementation=options.mlorc_implementation,
        seed=options.seed,
    )
    return model, optimizer


def _mlorc_adamw(model: torch.nn.Module, options: MethodOptions) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    # beta1 = 0.8 is the MLorc paper's setting (arXiv 2506.01897) for MLorc-AdamW fine-tuning.
    return _mlorc_optimizer(MLorcAdamW, model, options, (0.8, 0.999))


def _lora_model(model: torch.nn.Module, options: MethodOptions) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model

    targets = adapted_module_names(model)
    if is_sequence_classifier(model):
        task_type = "SEQ_CLS"
        # The head is freshly initialised, so it must train; peft keeps a trainable
        # copy of each module in modules_to_save and freezes the original.
        modules_to_save = [classifier_head_name(model)]
    else:
        task_type = "CAUSAL_LM"
        modules_to_save = None
    config = LoraConfig(
        task_type=task_type,
        r=options.lora_rank,
        lora_alpha=options.lora_alpha,
        lora_dropout=options.lora_dropout,
        target_modules=targets,
        modules_to_save=modules_to_save,
        bias="none",
    )
    return get_peft_model(model, config)


def _lora_adamw(peft_model: torch.nn.Module, options: MethodOptions) -> torch.optim.Optimizer:
    betas = options.betas or (0.9, 0.999)
    trainable = [param for param in peft_model.parameters() if param.requires_grad]
    return torch.optim.AdamW(trainable, lr=options.learning_rate, betas=betas, weight_decay=options.weight_decay)


def _lora(model: torch.nn.Module, options: MethodOptions) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    peft_model = _lora_model(model, options)
    return peft_model, _lora_adamw(peft_model, options)


def _lora_full(model: torch.nn.Module, options: MethodOptions) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    peft_model = _lora_model(model, options)
    for name, param in peft_model.named_parameters():
        # Frozen stay only the adapted base weights (their biases train, as LoRA
        # adapts the weight alone) and peft's untrained original of each
        # modules_to_save head.
        frozen = name.endswith(".base_layer.weight") or ".original_module." in name
        param.requires_grad_(not frozen)
    return peft_model, _lora_adamw(peft_model, options)


def _galore(model: torch.nn.Module, options: MethodOptions) -> tuple[torch.nn.Module, Any]:
    # galore_torch 1.0 imports bitsandbytes for its 8-bit optimizer. bitsandbytes 0.50
    # logs a warning on a CPU-only machine that cannot fetch its CPU kernel, which is
    # harmless here because the fp32 GaLoreAdamW does not use bitsandbytes.
    from galore_torch import GaLoreAdamW

    projected_ids = set()
    modules = dict(model.named_modules())
    for name in adapted_module_names(model):
        projected_ids.add(id(modules[name].weight))
    projected = [param for param in model.parameters() if id(param) in projected_ids]
    plain = [param for param in model.parameters() if id(param) not in projected_ids and param.requires_grad]
    groups = [
        {"params": plain},
        {
            "params": projected,
            "rank": options.rank,
            "update_proj_gap": options.galore_update_gap,
            "scale": options.galore_scale,
            "proj_type": "std",
        },
    ]
    betas = options.betas or (0.9, 0.999)
    # NOTE: galore_torch 1.0's AdamW uses eps = 1e-6 (transformers' old AdamW), adds
    # eps to the uncorrected sqrt(v), and keeps a GaLoreProjector object in the
    # optimizer state, so its state_dict does not load with weights_only=True.
    optimizer = GaLoreAdamW(
        groups,
        lr=options.learning_rate,
        betas=betas,
        weight_decay=options.weight_decay,
        no_deprecation_warning=True,
    )
    return model, optimizer


def _full_lion(model: torch.nn.Module, options: MethodOptions) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    from lion_pytorch import Lion

    betas = options.betas or LION_BETAS
    # decoupled_weight_decay=False: lion_pytorch then scales the weights by
    # 1 - lr * weight_decay, the same rule as MLorcLion.
    optimizer = Lion(model.parameters(), lr=options.learning_rate, betas=betas, weight_decay=options.weight_decay)
    return model, optimizer


def _mlorc_lion(model: torch.nn.Module, options: MethodOptions) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    from mlorc_lab.optim import MLorcLion

    return _mlorc_optimizer(MLorcLion, model, options, LION_BETAS)


METHODS: dict[str, Builder] = {
    "full-adamw": _full_adamw,
    "mlorc-adamw": _mlorc_adamw,
    "lora": _lora,
    "lora-full": _lora_full,
    "galore": _galore,
    "full-lion": _full_lion,
    "mlorc-lion": _mlorc_lion,
}


def build_method(method: str, model: torch.nn.Module, options: MethodOptions) -> tuple[torch.nn.Module, Any]:
    """Return ``(model, optimizer)`` for ``method``; the model may come back wrapped.

    LoRA methods wrap the model in a ``peft.PeftModel`` and freeze the base weights in
    place, so pass a model that is not shared with another run.
    """
    check_method(method)
    return METHODS[method](model, options)


def check_method(method: str) -> None:
    """Raise ``ValueError`` unless ``method`` is a key of :data:`METHODS`."""
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; choose one of {', '.join(sorted(METHODS))}")
