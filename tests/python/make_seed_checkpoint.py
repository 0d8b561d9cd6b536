"""Saves a checkpoint the Python system's way (torch.save of a dict with model_state_dict,
config, class_names, epoch, history, …) and reference logits for a fixed input.

usage: make_seed_checkpoint.py OUT.pth REFERENCE.safetensors"""
import sys

import torch
from safetensors.torch import save_file

from seed_model import ImageTypeClassifier

torch.manual_seed(11)
model = ImageTypeClassifier(num_classes=4, hidden_dim=512, dropout=0.4)
with torch.no_grad():
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
config = {
    "data": {"class_names": ["care_label", "detail_shot", "full_shot", "neck_label"], "train_ratio": 0.8,
             "val_ratio": 0.1, "test_ratio": 0.1, "csv_path": "image_data.csv", "random_state": 2025},
    "model": {"backbone": "efficientnet_b0", "pretrained": True, "dropout_rate": 0.4, "hidden_dim": 512,
              "freeze_backbone_epochs": 3},
    "training": {"batch_size": 32, "epochs": 25, "learning_rate": 1e-4, "optimizer": "adamw", "scheduler": "cosine"},
    "augmentation": {"image_size": 128, "horizontal_flip": True},
    "wandb": {"project": "image-type"},
}
torch.save(
    {
        "epoch": 7,
        "model_state_dict": model.state_dict(),
        "optimizer_state_dict": {},
        "config": config,
        "class_names": [],  # the Python system saved an empty list here
        "history": {"train_loss": [1.0, 0.5]},
        "best_val_loss": 0.4,
    },
    sys.argv[1],
)
model.eval()
x = torch.randn(2, 3, 128, 128)
with torch.no_grad():
    save_file({"input": x, "logits": model(x)}, sys.argv[2])
