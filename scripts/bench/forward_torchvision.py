"""Eval-mode forward speed of torchvision's efficientnet_b0 with the Python system's head.
usage: bench_forward.py [size] [batch] [iters]; prints `torchvision images_per_second=<x>`."""
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "python"))
from seed_model import ImageTypeClassifier  # noqa: E402

size, batch, iters = (int(a) for a in (sys.argv[1:] + ["224", "32", "3"][len(sys.argv) - 1:]))
torch.manual_seed(0)
model = ImageTypeClassifier().eval()
x = torch.randn(batch, 3, size, size)
with torch.no_grad():
    model(x)
    start = time.perf_counter()
    for _ in range(iters):
        model(x)
    rate = batch * iters / (time.perf_counter() - start)
print(f"torchvision images_per_second={rate:.2f} (size {size}, batch {batch}, {iters} iterations, {torch.get_num_threads()} threads)")
