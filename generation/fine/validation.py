"""Validation grids: fixed items x fixed seeds, one row per item, so grids from any step compare.

Row: condition_FG | condition_BG | real image | one generated image per seed.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import DDIMScheduler

from generation.fine.data import FineDataset
from generation.fine.pipeline import TigerFinePipeline
from generation.training.validation import image_grid


def to_uint8(images: torch.Tensor, low: float) -> np.ndarray:
    """[B, 3, H, W] in [low, 1] -> [B, H, W, 3] uint8."""
    scaled = (images.float() - low) / (1.0 - low)
    return (scaled.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def validation_rows(
    pipeline: TigerFinePipeline,
    dataset: FineDataset,
    indices: list[int],
    seeds: list[int],
    num_inference_steps: int,
    guidance_scale: float,
) -> np.ndarray:
    """uint8 [len(indices), 3 + len(seeds), H, W, 3]; DDIM sampling, one seed per column."""
    scheduler = pipeline.scheduler
    pipeline.scheduler = DDIMScheduler.from_config(scheduler.config)
    pipeline.set_progress_bar_config(disable=True)
    fg, bg = dataset.load_conditions(indices)
    real = to_uint8(dataset.load_pixels(indices), -1.0)
    rows = []
    try:
        for position, index in enumerate(indices):
            record = dataset.records[index]
            images = pipeline(
                text_nd=[record.text_nd] * len(seeds),
                text_bg=[record.text_bg] * len(seeds),
                condition_FG=fg[position : position + 1],
                condition_BG=bg[position : position + 1],
                num_inference_steps=num_inference_steps,
                guidance_scale=guidance_scale,
                generator=[torch.Generator().manual_seed(seed) for seed in seeds],
                resolution=dataset.resolution,
                output_type="np",
            ).images
            generated = (np.clip(images, 0, 1) * 255).round().astype(np.uint8)
            conditions = np.concatenate(
                [
                    to_uint8(fg[position : position + 1], 0.0),
                    to_uint8(bg[position : position + 1], 0.0),
                ]
            )
            rows.append(np.concatenate([conditions, real[position : position + 1], generated]))
    finally:
        pipeline.scheduler = scheduler
    return np.stack(rows)


def validation_grid(*args, **kwargs) -> np.ndarray:
    """`validation_rows` tiled into one HWC uint8 image."""
    return image_grid(validation_rows(*args, **kwargs))
