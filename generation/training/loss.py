"""Diffusion targets and loss weighting: epsilon or v-prediction, min-SNR, offset noise."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.training_utils import compute_snr


def sample_noise(
    latents: torch.Tensor, generator: torch.Generator, noise_offset: float = 0.0
) -> torch.Tensor:
    """Gaussian noise; `noise_offset` adds a per-channel constant so the model learns brightness."""
    noise = torch.randn(latents.shape, generator=generator, device=latents.device)
    if noise_offset > 0:
        shift = torch.randn((*latents.shape[:2], 1, 1), generator=generator, device=latents.device)
        noise = noise + noise_offset * shift
    return noise.to(latents.dtype)


def sample_timesteps(
    batch: int, scheduler: DDPMScheduler, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    high = scheduler.config.num_train_timesteps
    return torch.randint(0, high, (batch,), generator=generator, device=generator.device).to(device)


def training_target(
    scheduler: DDPMScheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    prediction = scheduler.config.prediction_type
    if prediction == "epsilon":
        return noise
    if prediction == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    raise ValueError(f"unsupported prediction_type {prediction!r}")


def diffusion_loss(
    model_pred: torch.Tensor,
    target: torch.Tensor,
    timesteps: torch.Tensor,
    scheduler: DDPMScheduler,
    snr_gamma: float | None = None,
    pixel_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """MSE, optionally min-SNR-gamma weighted (Hang et al. 2023) as in diffusers' examples.

    `pixel_weights` ([B, 1, h, w], broadcast over channels) reweights latent positions inside each
    item; each item's loss is its weighted mean, so the loss keeps its scale.
    """
    if pixel_weights is not None:
        squared = (model_pred.float() - target.float()) ** 2
        weights = pixel_weights.float().expand_as(squared)
        dims = list(range(1, squared.ndim))
        per_item = (squared * weights).sum(dim=dims) / weights.sum(dim=dims)
        if not snr_gamma:
            return per_item.mean()
        return (per_item * snr_weights(scheduler, timesteps, snr_gamma)).mean()
    if not snr_gamma:
        return F.mse_loss(model_pred.float(), target.float(), reduction="mean")
    per_item = F.mse_loss(model_pred.float(), target.float(), reduction="none")
    per_item = per_item.mean(dim=list(range(1, per_item.ndim)))
    return (per_item * snr_weights(scheduler, timesteps, snr_gamma)).mean()


def snr_weights(
    scheduler: DDPMScheduler, timesteps: torch.Tensor, snr_gamma: float
) -> torch.Tensor:
    """min(SNR, gamma) / SNR for epsilon, / (SNR + 1) for v-prediction."""
    snr = compute_snr(scheduler, timesteps)
    clipped = torch.minimum(snr, torch.full_like(snr, snr_gamma))
    if scheduler.config.prediction_type == "v_prediction":
        return clipped / (snr + 1)
    return clipped / snr
