"""Writes torchvision's EfficientNet-B0 ImageNet weights (IMAGENET1K_V1) as safetensors with
our key names (`backbone.features.…`), for `model.pretrained: true` with
`model.pretrained_weights: PATH`. Run it once on a machine with internet access:

    .venv/bin/python scripts/export_torchvision_weights.py efficientnet_b0_imagenet.safetensors

`--random-init [--seed N]` writes a randomly initialised backbone instead (for tests and
offline checks of the loading path)."""
import argparse

import torch
from safetensors.torch import save_file
from torchvision.models import EfficientNet_B0_Weights, efficientnet_b0

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("output")
parser.add_argument("--random-init", action="store_true", help="no download: a randomly initialised backbone")
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

if args.random_init:
    torch.manual_seed(args.seed)
    model = efficientnet_b0(weights=None)
else:
    model = efficientnet_b0(weights=EfficientNet_B0_Weights.IMAGENET1K_V1)
state = {
    f"backbone.{key}": value.contiguous()
    for key, value in model.state_dict().items()
    if key.startswith("features.") and not key.endswith("num_batches_tracked")
}
source = "random init (seed %d)" % args.seed if args.random_init else "torchvision IMAGENET1K_V1"
save_file(state, args.output, metadata={"source": source, "architecture": "efficientnet_b0"})
print(f"wrote {len(state)} backbone tensors ({source}) to {args.output}")
