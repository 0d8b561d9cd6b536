"""torchvision MobileNet references for the Rust parity test.

usage: mobilenet_reference.py OUT_DIR
For each of mobilenet_v3_small, mobilenet_v3_large, mobilenet_v2 (random init, fixed seed,
BatchNorm parameters and statistics randomised):
OUT_DIR/<name>_weights.pth        torch.save of the state dict (torchvision's key names)
OUT_DIR/<name>_reference.safetensors  input, eval_features, train_features (pooled
    features(x), BatchNorm in eval / train mode) and after_train.<key> BatchNorm running
    statistics after the train-mode forward
"""
import sys
from pathlib import Path

import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
for index, name in enumerate(["mobilenet_v3_small", "mobilenet_v3_large", "mobilenet_v2"]):
    torch.manual_seed(100 + index)
    model = getattr(torchvision.models, name)(weights=None)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    torch.save(model.state_dict(), out / f"{name}_weights.pth")
    x = torch.randn(3, 3, 96, 96)

    def pooled(m):
        return torch.flatten(nn.functional.adaptive_avg_pool2d(m.features(x), 1), 1)

    model.eval()
    with torch.no_grad():
        eval_features = pooled(model)
    model.train()
    with torch.no_grad():
        train_features = pooled(model)
    reference = {"input": x, "eval_features": eval_features, "train_features": train_features}
    for k, v in model.state_dict().items():
        if k.endswith("running_mean") or k.endswith("running_var"):
            reference["after_train." + k] = v.contiguous()
    save_file(reference, str(out / f"{name}_reference.safetensors"))
