"""Adapter that attaches any recorder to a ``transformers.Trainer`` run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from transformers import TrainerCallback

__all__ = ["RecorderCallback"]

RecorderFactory = Callable[[Any, torch.optim.Optimizer], Any]


class RecorderCallback(TrainerCallback):
    """Attach a recorder when training begins and remove it when training ends.

    Parameters
    ----------
    factory : callable
        ``factory(model, optimizer)`` returns a recorder (anything with ``remove()``),
        for example ``lambda model, optimizer: DriftRecorder(model.named_parameters(),
        optimizer, writer, every=10)``. The Trainer passes its model and optimizer to
        ``on_train_begin``; recorders unwrap accelerate's optimizer wrapper themselves.

    Examples
    --------
    >>> callback = RecorderCallback(lambda model, optimizer: SpectrumRecorder(
    ...     model.named_parameters(), optimizer, writer))
    >>> trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[callback])
    """

    def __init__(self, factory: RecorderFactory) -> None:
        if not callable(factory):
            raise TypeError(f"factory must be callable as factory(model, optimizer), got {type(factory).__name__}")
        self.factory = factory
        self.recorder: Any = None

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        if model is None or optimizer is None:
            raise ValueError(
                "The Trainer passed no model or optimizer to on_train_begin "
                f"(model={type(model).__name__}, optimizer={type(optimizer).__name__}); "
                "attach the recorder by hand after creating the optimizer"
            )
        self.remove()
        self.recorder = self.factory(model, optimizer)
        return control

    def on_train_end(self, args, state, control, **kwargs):
        self.remove()
        return control

    def remove(self) -> None:
        """Detach the current recorder, if any."""
        if self.recorder is not None:
            self.recorder.remove()
            self.recorder = None
