"""MLorc optimizers: AdamW and Lion with moments stored as randomized-SVD factors."""

from mlorc_lab.optim.adamw import MLorcAdamW
from mlorc_lab.optim.base import MLorcOptimizer, NonFiniteGradientError

__all__ = ["MLorcAdamW", "MLorcOptimizer", "NonFiniteGradientError"]
