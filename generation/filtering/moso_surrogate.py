"""The surrogate classifier MoSo differentiates: a small CNN, cheap enough for per-sample grads."""

from __future__ import annotations

import torch
from torch import nn


def conv_block(channels_in: int, channels_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(channels_out),
        nn.ReLU(inplace=False),
        nn.MaxPool2d(2),
    )


class SurrogateCNN(nn.Module):
    """`depth` conv-BN-ReLU-pool blocks, global average pool, linear head (grayscale input)."""

    def __init__(self, num_classes: int, width: int = 16, depth: int = 3, in_channels: int = 1):
        super().__init__()
        blocks, channels = [], in_channels
        for level in range(depth):
            blocks.append(conv_block(channels, width * 2**level))
            channels = width * 2**level
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.features(images)), 1))


def last_layer_parameters(model: nn.Module, last_layers: int | None) -> list[str]:
    """Names of the parameters of the last `last_layers` parametrised modules (all if None)."""
    names = [name for name, _ in model.named_parameters()]
    if last_layers is None:
        return names
    owners: list[str] = []
    for name in names:
        owner = name.rsplit(".", 1)[0]
        if owner not in owners:
            owners.append(owner)
    keep = set(owners[-last_layers:])
    return [name for name in names if name.rsplit(".", 1)[0] in keep]
