"""The Python system's model: torchvision efficientnet_b0 backbone (classifier removed)
and the LayerNorm/Dropout head, with the state-dict keys our Rust model uses."""
import torch
from torch import nn
from torchvision.models import efficientnet_b0


class ImageTypeClassifier(nn.Module):
    def __init__(self, num_classes=4, hidden_dim=512, dropout=0.4, stochastic_depth_prob=0.2):
        super().__init__()
        self.backbone = efficientnet_b0(weights=None, stochastic_depth_prob=stochastic_depth_prob)
        self.backbone.classifier = nn.Identity()
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(1280, hidden_dim),
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
