"""Stands in for torchvision's ImageNet weights file in the download test.

usage: make_imagenet_weights.py OUT_DIR
OUT_DIR/serve/efficientnet_b0_test-<sha256 prefix>.pth  torch.save of a torchvision
    efficientnet_b0 state dict (seeded random init, BatchNorm statistics randomised), named as
    torch.hub names its files
OUT_DIR/serve/efficientnet_b0_bad-00000000.pth  the same bytes under a name whose hash does not match
OUT_DIR/reference.safetensors  input and torchvision's pooled backbone features for it (eval mode)
OUT_DIR/name.txt  the good file's name
"""
import hashlib
import shutil
import sys
from pathlib import Path

import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

out = Path(sys.argv[1])
serve = out / "serve"
serve.mkdir(parents=True, exist_ok=True)
torch.manual_seed(99)
model = torchvision.models.efficientnet_b0(weights=None)
with torch.no_grad():
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.2, 0.2)
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
staging = out / "weights.pth"
torch.save(model.state_dict(), staging)
digest = hashlib.sha256(staging.read_bytes()).hexdigest()
name = f"efficientnet_b0_test-{digest[:8]}.pth"
shutil.copy(staging, serve / name)
shutil.copy(staging, serve / "efficientnet_b0_bad-00000000.pth")
(out / "name.txt").write_text(name)

model.eval()
x = torch.randn(2, 3, 96, 96)
with torch.no_grad():
    features = torch.flatten(model.avgpool(model.features(x)), 1)
save_file({"input": x, "features": features}, str(out / "reference.safetensors"))
