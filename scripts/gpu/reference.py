"""PyTorch's side of scripts/gpu_check.sh: the same network (torchvision EfficientNet-B0 +
our head, scripts/imgtype_torch.py), the same random tensors already on the device, AdamW and
label-smoothed cross-entropy, eager or torch.compile; bf16 as PyTorch users run it
(autocast). One JSON line per measurement, as bench_gpu prints.

usage: python scripts/gpu/reference.py DEVICE SIZE BATCH STEPS MEASUREMENT [eager|compile]
MEASUREMENT: train_fp32, train_bf16, forward_fp32 or forward_bf16"""
import contextlib
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from imgtype_torch import ImageTypeClassifier  # noqa: E402

device = torch.device(sys.argv[1])
size, batch, steps = (int(a) for a in sys.argv[2:5])
measurement = sys.argv[5]
mode = sys.argv[6] if len(sys.argv) > 6 else "eager"
torch.backends.cudnn.benchmark = True
torch.manual_seed(0)
model = ImageTypeClassifier(4, 512, 0.2, 0.1).to(device).to(memory_format=torch.channels_last)
images = torch.randn(batch, 3, size, size, device=device).to(memory_format=torch.channels_last)
labels = torch.randint(0, 4, (batch,), device=device)
bf16 = measurement.endswith("bf16")


def autocast():
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


if measurement.startswith("train"):
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    forward = torch.compile(model) if mode == "compile" else model

    def step():
        with autocast():
            loss = loss_fn(forward(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
else:
    model.eval()
    forward = torch.compile(model) if mode == "compile" else model

    def step():
        with torch.inference_mode(), autocast():
            forward(images)


def synchronize():
    if device.type == "cuda":
        torch.cuda.synchronize()


compile_started = time.perf_counter()
for _ in range(3):
    step()
synchronize()
warm_up_s = time.perf_counter() - compile_started
started = time.perf_counter()
for _ in range(steps):
    step()
synchronize()
rate = batch * steps / (time.perf_counter() - started)
peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
print(json.dumps({"name": f"torch_{mode}_{measurement}", "images_per_second": round(rate, 1),
                  "warm_up_s": round(warm_up_s, 1), "torch_peak_allocated_mib": peak and round(peak)}))
