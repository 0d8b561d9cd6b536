"""Writes torchvision reference data for the Rust parity test.

usage: parity_reference.py OUT_DIR
OUT_DIR/weights.safetensors    the model (random init, fixed seed, BatchNorm statistics randomised)
OUT_DIR/reference.safetensors  input, eval_logits, train_logits (dropout 0, stochastic depth off),
                               and after_train.<key> BatchNorm running statistics after that forward
"""
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from seed_model import ImageTypeClassifier, state_dict_for_rust

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
torch.manual_seed(1234)
model = ImageTypeClassifier(num_classes=4, hidden_dim=512, dropout=0.4)
# Non-trivial BatchNorm and LayerNorm parameters, so eval mode really exercises them.
with torch.no_grad():
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)):
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.2, 0.2)
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
save_file(state_dict_for_rust(model), str(out / "weights.safetensors"))

x = torch.randn(4, 3, 128, 128)
model.eval()
with torch.no_grad():
    eval_logits = model(x)

# Train mode without randomness: dropout 0 and stochastic depth off.
for m in model.modules():
    if isinstance(m, nn.Dropout):
        m.p = 0.0
    if m.__class__.__name__ == "StochasticDepth":
        m.p = 0.0
model.train()
with torch.no_grad():
    train_logits = model(x)
reference = {"input": x, "eval_logits": eval_logits, "train_logits": train_logits}
for k, v in model.state_dict().items():
    if k.endswith("running_mean") or k.endswith("running_var"):
        reference["after_train." + k] = v.contiguous()
save_file(reference, str(out / "reference.safetensors"))
print(f"wrote {out}")
