"""Binary losses for imbalanced tasks: BCE with pos_weight, or focal loss (Lin et al. 2017)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FocalLoss(nn.Module):
    """Focal loss on one logit; alpha balances the classes (alpha = weight of the positives)."""

    def __init__(self, gamma: float = 2.0, alpha: float = 0.5):
        super().__init__()
        self.gamma = gamma
        self.alpha = alpha

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        p_true = torch.exp(-bce)
        alpha = torch.where(targets > 0.5, self.alpha, 1 - self.alpha)
        return (alpha * (1 - p_true) ** self.gamma * bce).mean()


def make_loss(kind: str, pos_weight: float, gamma: float = 2.0) -> nn.Module:
    """weighted_loss: BCE with neg/pos pos_weight; focal: alpha from class frequencies."""
    if kind == "weighted_loss":
        return nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight))
    if kind == "focal":
        return FocalLoss(gamma, alpha=pos_weight / (1 + pos_weight))
    return nn.BCEWithLogitsLoss()
