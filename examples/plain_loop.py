"""Train a small network with MLorcAdamW in a plain PyTorch loop.

Run from the repository root: ``python examples/plain_loop.py``.
"""

import torch

from mlorc_lab.optim import MLorcAdamW

generator = torch.Generator().manual_seed(0)
inputs = torch.randn(256, 64, generator=generator)
targets = torch.randn(256, 8, generator=generator)
model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.GELU(), torch.nn.Linear(128, 8))

# Matrices keep their moments as rank-4 factors; biases and small matrices keep dense state.
optimizer = MLorcAdamW(model.named_parameters(), lr=1e-3, weight_decay=0.01, rank=4)
for step in range(200):
    loss = torch.nn.functional.mse_loss(model(inputs), targets)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()

print(f"loss after {step + 1} steps: {loss.item():.4f}")
print("optimizer state bytes per parameter:", optimizer.state_bytes())
