"""A bare eager PyTorch training loop on random tensors (NCHW, fp32): no data loading at
all, the same model, AdamW, cross-entropy. The floor any training pipeline starts from.

usage: .venv/bin/python scripts/bench/bare_train_loop.py SIZE BATCH STEPS
prints `bare images_per_second=<x>` over STEPS steps after 2 warm-up steps
"""
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from imgtype_torch import ImageTypeClassifier  # noqa: E402

size, batch, steps = map(int, sys.argv[1:4])
torch.manual_seed(0)
model = ImageTypeClassifier(4, 512, 0.2, 0.1).train()
optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
images, labels = torch.randn(batch, 3, size, size), torch.randint(0, 4, (batch,))


def step():
    loss = loss_fn(model(images), labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


for _ in range(2):
    step()
start = time.perf_counter()
for _ in range(steps):
    step()
print(f"bare images_per_second={batch * steps / (time.perf_counter() - start):.2f}")
