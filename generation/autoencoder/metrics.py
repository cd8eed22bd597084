"""Reconstruction quality: PSNR, and speckle texture (PSNR alone rewards blur on speckle).

Texture measures, on grayscale images in [0, 255]:
- `local_std_ratio`: mean 5x5 local standard deviation of the reconstruction over the real one
  (1.0 keeps the speckle grain; a blurred image drops well below 1).
- `local_variance_histogram_distance`: total-variation distance between histograms of log
  local variance (0 = same texture statistics, 1 = disjoint).
- `speckle_snr`: mean over std in local windows (averaged), for real and reconstruction.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

WINDOW = 5
BINS = np.linspace(-2.0, 9.0, 45)  # log local variance, intensities 0-255


def to_gray255(pixels: torch.Tensor) -> torch.Tensor:
    """[-1, 1] BCHW -> B1HW in [0, 255]."""
    return ((pixels.float().clamp(-1, 1) + 1) * 127.5).mean(dim=1, keepdim=True)


def local_moments(gray: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = F.avg_pool2d(gray, WINDOW, stride=1)
    square = F.avg_pool2d(gray * gray, WINDOW, stride=1)
    return mean, (square - mean * mean).clamp_min(0)


def psnr(real: torch.Tensor, fake: torch.Tensor) -> float:
    mse = F.mse_loss(to_gray255(fake), to_gray255(real)).item()
    return float(10 * np.log10(255.0**2 / max(mse, 1e-10)))


@dataclass
class ReconstructionMetrics:
    psnr: float
    local_std_ratio: float
    local_variance_histogram_distance: float
    speckle_snr_real: float
    speckle_snr_reconstructed: float

    def to_dict(self) -> dict:
        return {key: round(value, 4) for key, value in asdict(self).items()}


def log_variance_histogram(variance: torch.Tensor) -> np.ndarray:
    """Histogram of log local variance over BINS; values beyond the range count in the end bins,
    so every histogram sums to the pixel count (a flat image no longer divides 0 by 0)."""
    values = np.clip(np.log(variance.numpy() + 1e-1), BINS[0], BINS[-1])
    return np.histogram(values, BINS)[0].astype(float)


def texture_metrics(real: torch.Tensor, fake: torch.Tensor) -> ReconstructionMetrics:
    real_mean, real_var = local_moments(to_gray255(real))
    fake_mean, fake_var = local_moments(to_gray255(fake))
    real_hist = log_variance_histogram(real_var)
    fake_hist = log_variance_histogram(fake_var)
    distance = 0.5 * np.abs(real_hist / real_hist.sum() - fake_hist / fake_hist.sum()).sum()
    real_snr = (real_mean / real_var.sqrt().clamp_min(1.0)).mean().item()
    fake_snr = (fake_mean / fake_var.sqrt().clamp_min(1.0)).mean().item()
    return ReconstructionMetrics(
        psnr=psnr(real, fake),
        local_std_ratio=(fake_var.sqrt().mean() / real_var.sqrt().mean().clamp_min(1e-12)).item(),
        local_variance_histogram_distance=float(distance),
        speckle_snr_real=real_snr,
        speckle_snr_reconstructed=fake_snr,
    )


def gaussian_blur(pixels: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """Control for the metrics: what plain blur scores (high PSNR, lost speckle)."""
    radius = max(1, int(3 * sigma))
    grid = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(grid**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = pixels.shape[1]
    horizontal = kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    vertical = kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    padded = F.pad(pixels, (radius, radius, radius, radius), mode="reflect")
    blurred = F.conv2d(padded, horizontal, groups=channels)
    return F.conv2d(blurred, vertical, groups=channels)
