"""Fit AutoencoderKL on random crops (it is fully convolutional, and crops are several times
cheaper than full frames), measure it on full frames, set its latent scaling factor, save it.

Loss: L1 on pixels + L1 on image gradients (keeps the speckle edges that plain L1/MSE blur away)
+ L1 between real and reconstructed local standard deviation (5x5): pixel losses are minimised by
the local median, i.e. blur, so this term asks for the right amount of speckle energy even where
the exact speckle pattern cannot be kept + a small KL term (keeps the latent space smooth).
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

from generation.autoencoder.metrics import gaussian_blur, texture_metrics
from generation.training.randomness import step_generator
from metadata.atomic import staging_dir, write_json

LOGGER = logging.getLogger(__name__)
METRICS_FILE = "fit_metrics.json"


@dataclass
class AutoencoderFitConfig:
    steps: int = 600
    crop_size: int = 64
    batch_size: int = 16
    learning_rate: float = 1e-3
    gradient_weight: float = 1.0
    texture_weight: float = 1.0
    kl_weight: float = 1e-6
    seed: int = 0
    eval_images: int = 32


def image_gradients(pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return pixels[..., 1:, :] - pixels[..., :-1, :], pixels[..., :, 1:] - pixels[..., :, :-1]


def local_std(pixels: torch.Tensor, window: int = 5) -> torch.Tensor:
    mean = F.avg_pool2d(pixels, window, stride=1)
    square = F.avg_pool2d(pixels * pixels, window, stride=1)
    return (square - mean * mean).clamp_min(0).add(1e-6).sqrt()


def reconstruction_loss(
    real: torch.Tensor, fake: torch.Tensor, gradient_weight: float, texture_weight: float = 0.0
) -> torch.Tensor:
    loss = F.l1_loss(fake, real)
    if gradient_weight:
        for real_grad, fake_grad in zip(image_gradients(real), image_gradients(fake)):
            loss = loss + gradient_weight * F.l1_loss(fake_grad, real_grad)
    if texture_weight:
        loss = loss + texture_weight * F.l1_loss(local_std(fake), local_std(real))
    return loss


def random_crops(
    images: torch.Tensor, size: int, count: int, generator: torch.Generator
) -> torch.Tensor:
    """`count` random crops (and random flips) from a stack of full frames [N, 3, H, W]."""
    number, _, height, width = images.shape
    picks = torch.randint(0, number, (count,), generator=generator)
    tops = torch.randint(0, height - size + 1, (count,), generator=generator)
    lefts = torch.randint(0, width - size + 1, (count,), generator=generator)
    flips = torch.rand(count, generator=generator) < 0.5
    crops = []
    for pick, top, left, flip in zip(picks, tops, lefts, flips):
        crop = images[pick, :, top : top + size, left : left + size]
        crops.append(torch.flip(crop, dims=[-1]) if flip else crop)
    return torch.stack(crops)


def fit_autoencoder(
    vae: AutoencoderKL, images: torch.Tensor, config: AutoencoderFitConfig
) -> AutoencoderKL:
    """Train `vae` in place on crops of `images` ([-1, 1], [N, 3, H, W]); returns it frozen."""
    vae.train()
    vae.requires_grad_(True)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step / config.steps, 1.0)))
    )
    started = time.perf_counter()
    for step in range(config.steps):
        generator = step_generator(config.seed, step)
        batch = random_crops(images, config.crop_size, config.batch_size, generator)
        posterior = vae.encode(batch).latent_dist
        latents = posterior.sample(generator=generator)
        reconstruction = vae.decode(latents).sample
        loss = reconstruction_loss(
            batch, reconstruction, config.gradient_weight, config.texture_weight
        )
        loss = loss + config.kl_weight * posterior.kl().mean()
        if not torch.isfinite(loss):
            raise RuntimeError(f"autoencoder fit: loss became {loss.item()} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % 50 == 0 or step == config.steps - 1:
            elapsed = time.perf_counter() - started
            LOGGER.info(
                "autoencoder step %d/%d loss %.4f (%.0fs)", step, config.steps, loss.item(), elapsed
            )
    vae.eval()
    vae.requires_grad_(False)
    return vae


@torch.no_grad()
def evaluate_autoencoder(vae: AutoencoderKL, images: torch.Tensor, batch_size: int = 16) -> dict:
    """Full-frame metrics for the autoencoder (posterior mean) and for a blur control."""
    reconstructions = []
    for start in range(0, images.shape[0], batch_size):
        batch = images[start : start + batch_size]
        reconstructions.append(vae.decode(vae.encode(batch).latent_dist.mean).sample)
    reconstructed = torch.cat(reconstructions).clamp(-1, 1)
    return {
        "autoencoder": texture_metrics(images, reconstructed).to_dict(),
        "gaussian_blur_sigma1_control": texture_metrics(images, gaussian_blur(images)).to_dict(),
        "gaussian_blur_sigma05_control": texture_metrics(
            images, gaussian_blur(images, 0.5)
        ).to_dict(),
        "images": int(images.shape[0]),
    }


@torch.no_grad()
def latent_scaling_factor(vae: AutoencoderKL, images: torch.Tensor, batch_size: int = 16) -> float:
    """1 / std of the latents, so diffusion sees unit-variance latents (as SD's 0.18215)."""
    latents = [
        vae.encode(images[start : start + batch_size]).latent_dist.sample()
        for start in range(0, images.shape[0], batch_size)
    ]
    return float(1.0 / torch.cat(latents).std().clamp_min(1e-6))


def fit_and_save(
    vae: AutoencoderKL,
    images: torch.Tensor,
    config: AutoencoderFitConfig,
    folder: str | os.PathLike,
) -> tuple[AutoencoderKL, dict]:
    """Stage 0 end to end; the folder appears complete or not at all (reused on resume)."""
    fit_autoencoder(vae, images, config)
    evaluation = images[: config.eval_images]
    metrics = evaluate_autoencoder(vae, evaluation)
    scaling = latent_scaling_factor(vae, images[: max(config.eval_images, 64)])
    vae.register_to_config(scaling_factor=scaling)
    metrics.update(scaling_factor=scaling, steps=config.steps, crop_size=config.crop_size)
    with staging_dir(folder) as staging:
        vae.save_pretrained(staging)
        write_json(Path(staging) / METRICS_FILE, metrics)
    LOGGER.info("autoencoder metrics: %s", metrics)
    return vae, metrics
