"""MLorc optimizers: AdamW and Lion with moments stored as randomized-SVD factors."""

from mlorc_lab.optim.adamw import MLorcAdamW
from mlorc_lab.optim.base import MLorcOptimizer, NonFiniteGradientError
from mlorc_lab.optim.lion import MLorcLion
from mlorc_lab.optim.per_layer import PerLayerUpdater

__all__ = ["MLorcAdamW", "MLorcLion", "MLorcOptimizer", "NonFiniteGradientError", "PerLayerUpdater"]
