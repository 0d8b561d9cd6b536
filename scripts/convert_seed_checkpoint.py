"""Converts a checkpoint saved by the Python system (torch.save of a dict with
`model_state_dict`, `config`, `class_names`, epoch, history, …) into our model file, so
`test` and the backend API use it directly:

    .venv/bin/python scripts/convert_seed_checkpoint.py models/best_model.pth best_model.safetensors

Class names come from the checkpoint, else (the Python system saved an empty list) from its
config's `data.class_names`, else the four default classes. Config sections we do not know
are dropped (and listed)."""
import argparse
import json

import torch
from safetensors.torch import save_file

DEFAULT_CLASSES = ["care_label", "detail_shot", "full_shot", "neck_label"]
KNOWN_SECTIONS = {"data", "model", "training", "augmentation", "validation", "logging", "inference", "paths", "system"}

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("checkpoint")
parser.add_argument("output")
args = parser.parse_args()

checkpoint = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
if not isinstance(checkpoint, dict) or "model_state_dict" not in checkpoint:
    raise SystemExit(f"{args.checkpoint}: not a checkpoint of the Python system (no model_state_dict)")
config = dict(checkpoint.get("config") or {})
dropped = sorted(set(config) - KNOWN_SECTIONS)
config = {k: v for k, v in config.items() if k in KNOWN_SECTIONS}
class_names = list(checkpoint.get("class_names") or config.get("data", {}).get("class_names") or DEFAULT_CLASSES)
config.setdefault("data", {})["class_names"] = class_names
state = {
    key: value.detach().float().contiguous()
    for key, value in checkpoint["model_state_dict"].items()
    if not key.endswith("num_batches_tracked")
}
outputs = state["classifier.5.weight"].shape[0]
if outputs != len(class_names):
    raise SystemExit(f"the model has {outputs} outputs but {len(class_names)} class names {class_names}")
image_size = config.get("augmentation", {}).get("image_size", 256)
metadata = {
    "format": "imgtype-model-v1",
    "class_names": json.dumps(class_names),
    "config": json.dumps(config),
    "image_size": str(image_size),
    "normalize_mean": json.dumps([0.485, 0.456, 0.406]),
    "normalize_std": json.dumps([0.229, 0.224, 0.225]),
    "architecture": config.get("model", {}).get("backbone", "efficientnet_b0"),
    "converted_from": args.checkpoint,
    "source_epoch": str(checkpoint.get("epoch", "")),
}
save_file(state, args.output, metadata=metadata)
print(f"wrote {args.output}: {len(state)} tensors, classes {class_names}, image_size {image_size}")
if dropped:
    print(f"config sections not used by this tool were dropped: {', '.join(dropped)}")
