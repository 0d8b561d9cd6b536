"""Reads one of our model files from Python as a user would, and checks it.

usage: check_model_file.py MODEL.safetensors REFERENCE.safetensors
The model file loads with safetensors.torch.load_file into the Python system's model
(everything but num_batches_tracked, which our files do not carry), its metadata names the
classes and config, and its logits on REFERENCE's `input` match REFERENCE's `logits`."""
import json
import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from seed_model import ImageTypeClassifier

model_path, reference_path = sys.argv[1], sys.argv[2]
with safe_open(model_path, framework="pt") as f:
    metadata = f.metadata()
for key in ("format", "class_names", "config", "image_size", "normalize_mean", "normalize_std", "architecture"):
    assert key in metadata, f"metadata has no {key}: {sorted(metadata)}"
class_names = json.loads(metadata["class_names"])
config = json.loads(metadata["config"])
hidden = config["model"]["hidden_dim"] or max(512, 1280 // 2)
model = ImageTypeClassifier(num_classes=len(class_names), hidden_dim=hidden, dropout=config["model"]["dropout_rate"])
state = load_file(model_path)
expected = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
assert set(state) == expected, (sorted(set(state) ^ expected))[:10]
missing, unexpected = model.load_state_dict(state, strict=False)
assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing), (missing, unexpected)
model.eval()
reference = load_file(reference_path)
with torch.no_grad():
    logits = model(reference["input"])
diff = (logits - reference["logits"]).abs().max().item()
print(f"classes {class_names}, image_size {metadata['image_size']}, max |logit diff| = {diff:.3e}")
assert diff <= 1e-4, diff
