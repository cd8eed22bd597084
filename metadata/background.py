"""The background condition: a tissue map with the nodule removed, and its text description.

`condition_BG` is the frame with the nodule region filled from its surroundings (normalised
convolution) and lightly smoothed, so it carries the brightness layout (fascia, attenuation,
vessels, gain) of the tissue but none of the nodule. `text_bg` describes the tissue outside the
nodule with three measured numbers, each also given as a word for the text encoder:

1. mean    — mean grey level (0-255) of background pixels;
2. std     — standard deviation of those grey levels (global contrast);
3. grain   — speckle grain size in pixels: std of the high-passed image (minus a Gaussian blur,
             sigma 4 px) divided by the RMS one-pixel finite difference, over background pixels.
             It grows with the speckle's correlation length (coarse texture) and is ~0.7 for
             white noise.

Background pixels are those outside the nodule mask dilated by 3% of the frame height, and not
part of the black frame border (median-filtered grey level below 8).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

# Word thresholds, fixed so that a word means the same thing on every dataset.
BRIGHT_MEAN = 100.0
HIGH_CONTRAST_STD = 26.0
COARSE_GRAIN = 1.2


@dataclass(frozen=True)
class BackgroundStats:
    mean: float
    std: float
    grain: float

    def words(self) -> tuple[str, str, str]:
        return (
            "bright" if self.mean >= BRIGHT_MEAN else "dark",
            "high contrast" if self.std >= HIGH_CONTRAST_STD else "low contrast",
            "coarse texture" if self.grain >= COARSE_GRAIN else "fine texture",
        )

    def as_list(self) -> list[float]:
        return [round(self.mean, 6), round(self.std, 6), round(self.grain, 6)]


def background_region(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    grey = to_grey(image)
    radius = max(1, round(0.03 * grey.shape[0]))
    structure = ndimage.generate_binary_structure(2, 1)
    nodule = ndimage.binary_dilation(mask > 0, structure, iterations=radius)
    # "5x5 median below 8", counted: a 25-pixel median is below 8 exactly when 13 or more of
    # the pixels are, and a box count is ~30x faster than scipy's rank filter.
    dark = ndimage.uniform_filter((grey < 8).astype(np.float32), size=5)
    border = dark > 12.5 / 25
    return ~nodule & ~border


def measure_background(image: np.ndarray, mask: np.ndarray) -> BackgroundStats:
    grey = to_grey(image).astype(np.float64)
    region = background_region(grey, mask)
    if region.sum() < 16:
        raise ValueError("too few background pixels to describe the tissue")
    values = grey[region]
    high_pass = grey - ndimage.gaussian_filter(grey, sigma=4)
    dy = np.diff(grey, axis=0)[region[1:] & region[:-1]]
    dx = np.diff(grey, axis=1)[region[:, 1:] & region[:, :-1]]
    gradient_rms = np.sqrt((np.mean(dy**2) + np.mean(dx**2)) / 2) + 1e-9
    grain = float(high_pass[region].std() / gradient_rms)
    return BackgroundStats(mean=float(values.mean()), std=float(values.std()), grain=grain)


def compose_text_bg(stats: BackgroundStats) -> str:
    """'mean, std, grain, <brightness>, <contrast>, <texture>' — numbers first, then words."""
    numbers = ", ".join(f"{value:.6f}" for value in (stats.mean, stats.std, stats.grain))
    return f"{numbers}, {', '.join(stats.words())}"


def tissue_map(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Grey tissue map with the nodule filled in from its surroundings (uint8, same size)."""
    grey = to_grey(image).astype(np.float64)
    height = grey.shape[0]
    radius = max(1, round(0.03 * height))
    hole = ndimage.binary_dilation(mask > 0, iterations=radius)
    valid = (~hole).astype(np.float64)
    sigma = max(2.0, height / 16)
    numerator = ndimage.gaussian_filter(grey * valid, sigma)
    denominator = ndimage.gaussian_filter(valid, sigma)
    filled = np.where(hole, numerator / np.maximum(denominator, 1e-6), grey)
    smoothed = ndimage.gaussian_filter(filled, sigma=max(1.0, height / 64))
    return np.clip(smoothed, 0, 255).round().astype(np.uint8)


def to_grey(image: np.ndarray) -> np.ndarray:
    array = np.asarray(image)
    if array.ndim == 3:
        array = array[..., :3].mean(axis=-1)
    return array
