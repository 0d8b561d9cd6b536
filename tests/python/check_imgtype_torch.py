"""scripts/imgtype_torch.py loads one of our model files (any backbone) with the same logits.

usage: check_imgtype_torch.py MODEL.safetensors REFERENCE.safetensors"""
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import imgtype_torch  # noqa: E402

model, metadata = imgtype_torch.load_model_file(sys.argv[1])
reference = load_file(sys.argv[2])
with torch.no_grad():
    logits = model(reference["input"])
diff = (logits - reference["logits"]).abs().max().item()
print(f"{metadata['architecture']}: max |logit difference| = {diff:.2e}")
assert diff <= 1e-4, diff
