"""Validation grids: fixed prompts x fixed seeds, so grids from different steps compare."""

from __future__ import annotations

import numpy as np
import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline


@torch.no_grad()
def generate_images(
    pipeline: StableDiffusionPipeline,
    prompts: list[str],
    seeds: list[int],
    num_inference_steps: int,
    guidance_scale: float,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """uint8 images [len(prompts), len(seeds), H, W, 3]; DDIM sampling, one seed per column."""
    pipeline = pipeline.to(device)
    pipeline.scheduler = DDIMScheduler.from_config(pipeline.scheduler.config)
    pipeline.set_progress_bar_config(disable=True)
    rows = []
    for prompt in prompts:
        generators = [torch.Generator(device="cpu").manual_seed(seed) for seed in seeds]
        images = pipeline(
            [prompt] * len(seeds),
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            generator=generators,
            output_type="np",
        ).images
        rows.append((np.clip(images, 0, 1) * 255).round().astype(np.uint8))
    return np.stack(rows)


def image_grid(images: np.ndarray, pad: int = 2) -> np.ndarray:
    """[rows, cols, H, W, C] -> one HWC image with `pad` white pixels between tiles."""
    rows, cols, height, width, channels = images.shape
    grid = np.full(
        (rows * (height + pad) - pad, cols * (width + pad) - pad, channels), 255, np.uint8
    )
    for row in range(rows):
        for col in range(cols):
            top, left = row * (height + pad), col * (width + pad)
            grid[top : top + height, left : left + width] = images[row, col]
    return grid
