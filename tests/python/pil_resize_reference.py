"""torchvision's Resize((s, s)) on a PIL image (bilinear, antialias) for the Rust resize test.

usage: pil_resize_reference.py OUT.safetensors IMAGE...
Writes `<i>_<size>` (uint8 HWC) for each image i and size in 48, 64, 96, 224 (and the
64-pixel resize of a 300x180 crop, for non-square sources)."""
import sys

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from torchvision import transforms

out = {}
for i, path in enumerate(sys.argv[2:]):
    image = Image.open(path).convert("RGB")
    wide = image.resize((300, 180), Image.BICUBIC)
    for size in (48, 64, 96, 224):
        resized = transforms.Resize((size, size))(image)
        out[f"{i}_{size}"] = torch.from_numpy(np.asarray(resized).copy())
    out[f"{i}_wide_64"] = torch.from_numpy(np.asarray(transforms.Resize((64, 64))(wide)).copy())
    out[f"{i}_wide_source"] = torch.from_numpy(np.asarray(wide).copy())
save_file(out, sys.argv[1])
