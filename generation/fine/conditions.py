"""Condition images as ControlNet expects them: RGB float tensors in [0, 1].

One function for training and inference, so a mask reaches the FG branch identically in both:
shorter side resized to the resolution (bilinear, so mask edges keep sub-pixel position), square
crop at the given (or centre) offset, three channels (the grayscale tissue map is replicated).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from metadata.records import MetadataError

ConditionInput = Image.Image | np.ndarray | torch.Tensor | str | os.PathLike


def resized_size(height: int, width: int, resolution: int) -> tuple[int, int]:
    """Size after scaling the shorter side to `resolution` (same rule as the coarse stage)."""
    scale = resolution / min(height, width)
    return max(resolution, round(height * scale)), max(resolution, round(width * scale))


def open_rgb(path: str | os.PathLike) -> Image.Image:
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError) as error:
        raise MetadataError(Path(path), f"unreadable image ({error})") from None


def condition_array(
    picture: Image.Image, resolution: int, offset: tuple[int, int] | None = None
) -> np.ndarray:
    """PIL image -> CHW float32 in [0, 1], resized and square-cropped to `resolution`."""
    picture = picture.convert("RGB")
    height, width = resized_size(picture.height, picture.width, resolution)
    if (height, width) != (picture.height, picture.width):
        picture = picture.resize((width, height), Image.Resampling.BILINEAR)
    if offset is None:
        offset = ((height - resolution) // 2, (width - resolution) // 2)
    top, left = offset
    picture = picture.crop((left, top, left + resolution, top + resolution))
    return np.asarray(picture, dtype=np.float32).transpose(2, 0, 1) / 255.0


def to_condition_tensor(image: ConditionInput, resolution: int) -> torch.Tensor:
    """One condition (path, PIL, HW/HWC array or CHW/HW tensor) -> [3, R, R] float in [0, 1].

    uint8 arrays are read as 0..255; float arrays and tensors must already be in [0, 1].
    """
    if isinstance(image, (str, os.PathLike)):
        image = open_rgb(image)
    if isinstance(image, Image.Image):
        return torch.from_numpy(condition_array(image, resolution))
    if isinstance(image, np.ndarray):
        if image.dtype == np.uint8:
            return to_condition_tensor(Image.fromarray(image), resolution)
        image = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
        if image.ndim == 3 and image.shape[-1] in (1, 3) and image.shape[0] not in (1, 3):
            image = image.permute(2, 0, 1)
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"unsupported condition type {type(image).__name__}")
    tensor = image.float()
    if tensor.ndim == 2:
        tensor = tensor[None]
    if tensor.ndim != 3 or tensor.shape[0] not in (1, 3):
        raise ValueError(f"condition tensor must be [H, W], [1|3, H, W]; got {tuple(image.shape)}")
    if tensor.min() < 0 or tensor.max() > 1:
        raise ValueError("condition tensors must lie in [0, 1] (ControlNet's input range)")
    if tensor.shape[0] == 1:
        tensor = tensor.expand(3, -1, -1)
    if tensor.shape[-2:] != (resolution, resolution):
        array = (tensor.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
        return to_condition_tensor(Image.fromarray(array), resolution)
    return tensor.contiguous()


def condition_batch(images: ConditionInput | list, resolution: int) -> torch.Tensor:
    """A single condition or a list (or a [B, C, H, W] tensor) -> [B, 3, R, R] in [0, 1]."""
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        images = list(images)
    if not isinstance(images, (list, tuple)):
        images = [images]
    return torch.stack([to_condition_tensor(image, resolution) for image in images])
