"""PyTorch reference numbers for the Rust loss and optimiser tests.

usage: loss_optim_reference.py OUT.safetensors
Writes fixed logits and targets, the PyTorch values of each loss variant, and the
parameters after three steps of AdamW, Adam and SGD(momentum 0.9) on fixed gradients."""
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

torch.manual_seed(0)
logits = torch.randn(6, 4) * 2
targets = torch.tensor([0, 1, 2, 3, 1, 2])
weights = torch.tensor([0.5, 1.0, 2.0, 1.5])
soft = torch.softmax(torch.randn(6, 4), dim=1)


def focal(logits, targets, alpha, gamma, weight=None):
    """FL = -alpha (1 - p_t)^gamma_t log p_t (x w_t), mean over the batch."""
    log_p = F.log_softmax(logits, dim=1)
    log_pt = log_p.gather(1, targets[:, None]).squeeze(1)
    pt = log_pt.exp()
    loss = -alpha * (1 - pt) ** gamma[targets] * log_pt
    if weight is not None:
        loss = loss * weight[targets]
    return loss.mean()


def soft_focal(logits, probs, alpha, gamma, weight=None):
    log_p = F.log_softmax(logits, dim=1)
    per_class = -alpha * (1 - log_p.exp()) ** gamma[None, :] * log_p * probs
    if weight is not None:
        per_class = per_class * weight[None, :]
    return per_class.sum(1).mean()


gamma_scalar = torch.full((4,), 2.0)
gamma_list = torch.tensor([1.0, 2.0, 3.0, 0.5])
out = {
    "logits": logits,
    "targets": targets,
    "weights": weights,
    "soft": soft,
    "ce": F.cross_entropy(logits, targets).reshape(1),
    "ce_smooth": F.cross_entropy(logits, targets, label_smoothing=0.1).reshape(1),
    "ce_weighted_smooth": F.cross_entropy(logits, targets, weight=weights, label_smoothing=0.1).reshape(1),
    "ce_soft_weighted_smooth": F.cross_entropy(logits, soft, weight=weights, label_smoothing=0.1).reshape(1),
    "focal_scalar": focal(logits, targets, 0.25, gamma_scalar).reshape(1),
    "focal_list_weighted": focal(logits, targets, 1.0, gamma_list, weights).reshape(1),
    "focal_soft_weighted": soft_focal(logits, soft, 0.5, gamma_list, weights).reshape(1),
}

# Optimisers: one parameter, three steps with fixed gradients.
start = torch.randn(5, 3)
grads = [torch.randn(5, 3) for _ in range(3)]
out["param_start"] = start
for i, g in enumerate(grads):
    out[f"grad_{i}"] = g
for name, make in {
    "adamw": lambda p: torch.optim.AdamW([p], lr=0.01, weight_decay=0.1),
    "adam": lambda p: torch.optim.Adam([p], lr=0.01, weight_decay=0.1),
    "sgd": lambda p: torch.optim.SGD([p], lr=0.01, momentum=0.9, weight_decay=0.1),
}.items():
    p = torch.nn.Parameter(start.clone())
    opt = make(p)
    for g in grads:
        p.grad = g.clone()
        opt.step()
    out[f"after_{name}"] = p.detach().clone()

# Gradient clipping by global norm over two tensors.
a, b = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2, 2))
a.grad, b.grad = torch.tensor([3.0, 4.0, 0.0]), torch.tensor([[12.0, 0.0], [0.0, 0.0]])
norm = torch.nn.utils.clip_grad_norm_([a, b], max_norm=1.0)
out["clip_norm"] = norm.reshape(1)
out["clipped_a"] = a.grad.clone()
out["clipped_b"] = b.grad.clone()
save_file({k: v.contiguous() for k, v in out.items()}, sys.argv[1])
print(f"wrote {sys.argv[1]}")
