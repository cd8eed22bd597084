"""Reading source images and masks with errors that name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

MASK_THRESHOLD = 127  # JPEG masks carry grey edges


def read_grey(path: Path) -> np.ndarray:
    if not path.is_file():
        raise ValueError(f"{path}: file not found")
    try:
        with Image.open(path) as picture:
            return np.asarray(picture.convert("L"))
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"{path}: unreadable image ({error})") from None


def read_mask(path: Path) -> np.ndarray:
    return read_grey(path) > MASK_THRESHOLD
