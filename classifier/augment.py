"""Batched augmentation on the training device: one affine grid-sample per batch instead of
per-image PIL transforms. Random parameters come from a CPU generator seeded per step, so runs
are reproducible on any device.

Policies:
- standard: flip, rotation ±10°, zoom crop 0.85–1 with ±5% shift, brightness/contrast ±10%.
- strong ("classic augmentation" arm): flip, rotation ±25°, zoom 0.7–1.15 with ±10% shift,
  brightness/contrast ±25%, gamma 0.7–1.4, multiplicative speckle noise (σ ≤ 0.1) and Gaussian
  blur on a third of the batch — the usual hand-made ultrasound augmentations, no new content.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF


@dataclass(frozen=True)
class Policy:
    rotation: float  # degrees, ±
    zoom: tuple[float, float]
    shift: float  # fraction of the half-size, ±
    brightness: float
    contrast: float
    gamma: tuple[float, float] = (1.0, 1.0)
    speckle: float = 0.0
    blur_probability: float = 0.0


POLICIES = {
    "standard": Policy(10.0, (0.85, 1.0), 0.05, 0.1, 0.1),
    "strong": Policy(25.0, (0.7, 1.15), 0.10, 0.25, 0.25, (0.7, 1.4), 0.10, 0.33),
}


def _uniform(generator: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    return torch.rand(n, generator=generator) * (high - low) + low


def augment(batch: torch.Tensor, policy_name: str, generator: torch.Generator) -> torch.Tensor:
    """float [B,3,H,W] in [0,1] -> augmented batch in [0,1], same device and size."""
    if policy_name == "none" or batch.shape[0] == 0:
        return batch
    policy = POLICIES[policy_name]
    n, device = batch.shape[0], batch.device
    angle = _uniform(generator, n, -policy.rotation, policy.rotation) * math.pi / 180
    scale = 1.0 / _uniform(generator, n, *policy.zoom)
    shift = _uniform(generator, 2 * n, -policy.shift, policy.shift).view(n, 2) * 2
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack(
        [
            torch.stack([cos * flip, -sin, shift[:, 0]], 1),
            torch.stack([sin * flip, cos, shift[:, 1]], 1),
        ],
        1,
    )
    grid = F.affine_grid(theta.to(device, batch.dtype), list(batch.shape), align_corners=False)
    out = F.grid_sample(batch, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    brightness = _uniform(generator, n, -policy.brightness, policy.brightness).view(n, 1, 1, 1)
    contrast = _uniform(generator, n, 1 - policy.contrast, 1 + policy.contrast).view(n, 1, 1, 1)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * contrast.to(device) + mean + brightness.to(device)
    out = out.clamp(0, 1)
    if policy.gamma != (1.0, 1.0):
        gamma = _uniform(generator, n, *policy.gamma).view(n, 1, 1, 1).to(device)
        out = out.clamp_min(1e-6) ** gamma
    if policy.speckle > 0:
        sigma = _uniform(generator, n, 0, policy.speckle).view(n, 1, 1, 1)
        noise = torch.randn(n, 1, *batch.shape[2:], generator=generator) * sigma
        out = (out * (1 + noise.to(device, out.dtype))).clamp(0, 1)
    if policy.blur_probability > 0:
        chosen = torch.rand(n, generator=generator) < policy.blur_probability
        if chosen.any():
            sigma = float(_uniform(generator, 1, 0.5, 1.5))
            index = chosen.nonzero().flatten().to(device)
            out[index] = TF.gaussian_blur(out[index], kernel_size=[5, 5], sigma=[sigma, sigma])
    return out
