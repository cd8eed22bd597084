"""Image loading with errors that name the file; every filtering step reads images through here."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from metadata.records import MetadataError


def open_rgb(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode an image as RGB; a missing or corrupt file raises MetadataError."""
    file = Path(path)
    if not file.is_file():
        raise MetadataError(file, "image file not found")
    try:
        with Image.open(file) as picture:
            picture.load()
            return picture.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise MetadataError(file, f"unreadable image ({error})") from None


def load_gray_tensor(path: str | os.PathLike, size: int) -> torch.Tensor:
    """Grayscale float tensor (1, size, size) in [0, 1]; ultrasound frames carry no colour."""
    picture = open_rgb(path).convert("L").resize((size, size), Image.Resampling.BILINEAR)
    array = np.asarray(picture, dtype=np.float32) / 255.0
    return torch.from_numpy(array).unsqueeze(0)


def load_gray_stack(paths: list[Path], size: int) -> torch.Tensor:
    """(N, 1, size, size) stack; surrogate pools are small enough to hold in memory."""
    if not paths:
        return torch.zeros(0, 1, size, size)
    return torch.stack([load_gray_tensor(path, size) for path in paths])


def thumbnails(paths: list[Path]) -> np.ndarray:
    """(N, 1024) unit-norm grey thumbnails: a dot product is the Pearson correlation the
    near-copy rule thresholds (metadata.near_duplicates)."""
    from metadata.near_duplicates import THUMBNAIL, thumbnail_vector

    if not paths:
        return np.zeros((0, THUMBNAIL * THUMBNAIL))
    return np.stack([thumbnail_vector(np.asarray(open_rgb(p).convert("L"))) for p in paths])
