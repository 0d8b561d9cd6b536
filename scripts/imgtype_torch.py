"""Our model in PyTorch: the Python system's classifier (a torchvision backbone,
efficientnet_b0, mobilenet_v3_large, mobilenet_v3_small or mobilenet_v2, without its
classifier, and the LayerNorm/Dropout head), and loading our .safetensors model files into it."""
import json

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn
import torchvision

FEATURE_DIMS = {"efficientnet_b0": 1280, "mobilenet_v3_large": 960, "mobilenet_v3_small": 576, "mobilenet_v2": 1280}


class ImageTypeClassifier(nn.Module):
    def __init__(self, num_classes=4, hidden_dim=512, dropout=0.4, stochastic_depth_prob=0.2, backbone="efficientnet_b0"):
        super().__init__()
        if backbone == "efficientnet_b0":
            self.backbone = torchvision.models.efficientnet_b0(weights=None, stochastic_depth_prob=stochastic_depth_prob)
        else:
            self.backbone = getattr(torchvision.models, backbone)(weights=None)
        # The backbone's forward then ends at its pooled, flattened features.
        self.backbone.classifier = nn.Identity()
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(FEATURE_DIMS[backbone], hidden_dim),
            nn.LayerNorm(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, num_classes),
        )
        for m in self.classifier.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.classifier(self.backbone(x))


def state_dict_for_rust(model):
    """The state dict without num_batches_tracked (our files do not carry it)."""
    return {k: v.detach().contiguous() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}


def load_model_file(path):
    """(model in eval mode, metadata dict) from one of our model files."""
    with safe_open(path, framework="pt") as f:
        metadata = f.metadata() or {}
    if "class_names" not in metadata or "config" not in metadata:
        raise SystemExit(f"{path}: not a model file of this tool (no class_names / config metadata)")
    class_names = json.loads(metadata["class_names"])
    config = json.loads(metadata["config"])
    model_config = config.get("model", {})
    backbone = model_config.get("backbone", "efficientnet_b0")
    hidden = model_config.get("hidden_dim") or max(512, FEATURE_DIMS[backbone] // 2)
    model = ImageTypeClassifier(len(class_names), hidden, model_config.get("dropout_rate", 0.4), backbone=backbone)
    missing, unexpected = model.load_state_dict(load_file(path), strict=False)
    if unexpected or any(not k.endswith("num_batches_tracked") for k in missing):
        raise SystemExit(f"{path}: keys do not match the model (missing {missing[:5]}, unexpected {unexpected[:5]})")
    return model.eval(), metadata
