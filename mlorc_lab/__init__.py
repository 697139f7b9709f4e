"""mlorc-lab: MLorc optimizers, low-rank diagnostics and the paper's figures.

MLorc (Momentum Low-rank Compression, arXiv 2506.01897) stores the AdamW or Lion
moments of every weight matrix as rank-r factors from a randomized SVD.
"""

__version__ = "0.1.0"
