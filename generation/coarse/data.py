"""Training images and prompts from a Tiger dataset folder (metadata.jsonl contract)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from generation.coarse.prompts import combine_prompt
from metadata.records import MetadataError, MetadataRecord, resolve
from metadata.subset import training_records
from metadata.validate import read_dataset


@dataclass
class CoarseDataset:
    """Records, their image paths and combined prompts; images are read on demand."""

    records: list[MetadataRecord]
    image_paths: list[Path]
    prompts: list[str]
    resolution: int
    mask_paths: list[Path] | None = None  # condition_FG (nodule masks), for the nodule loss weight

    def __len__(self) -> int:
        return len(self.records)

    def load_pixels(self, indices: list[int], crops: list[tuple[int, int]] | None = None):
        """[-1, 1] float tensors [B, 3, R, R]; `crops` gives (top, left) or None for centre."""
        batch = []
        for position, index in enumerate(indices):
            offset = crops[position] if crops is not None else None
            batch.append(load_image(self.image_paths[index], self.resolution, offset))
        return torch.from_numpy(np.stack(batch))

    def load_masks(self, indices: list[int], crops: list[tuple[int, int]] | None = None):
        """Nodule masks as {0, 1} float tensors [B, 1, R, R], cropped like `load_pixels`."""
        if self.mask_paths is None:
            raise ValueError("this dataset was loaded without its condition_FG masks")
        batch = []
        for position, index in enumerate(indices):
            offset = crops[position] if crops is not None else None
            mask = load_image(self.mask_paths[index], self.resolution, offset)
            batch.append((mask.max(axis=0, keepdims=True) > 0).astype(np.float32))
        return torch.from_numpy(np.stack(batch))

    def crop_range(self, index: int) -> tuple[int, int]:
        """Spare rows/columns after the resize, for random crops."""
        with Image.open(self.image_paths[index]) as image:
            height, width = resized_size(image.size[1], image.size[0], self.resolution)
        return height - self.resolution, width - self.resolution


def resized_size(height: int, width: int, resolution: int) -> tuple[int, int]:
    scale = resolution / min(height, width)
    return max(resolution, round(height * scale)), max(resolution, round(width * scale))


def load_image(path: Path, resolution: int, offset: tuple[int, int] | None = None) -> np.ndarray:
    """Shorter side resized to `resolution`, then a centre (or given) square crop, CHW in [-1,1]."""
    try:
        with Image.open(path) as image:
            picture = image.convert("RGB")
    except (OSError, ValueError) as error:
        raise MetadataError(path, f"unreadable image ({error})") from None
    height, width = resized_size(picture.height, picture.width, resolution)
    if (height, width) != (picture.height, picture.width):
        picture = picture.resize((width, height), Image.Resampling.BICUBIC)
    if offset is None:
        offset = ((height - resolution) // 2, (width - resolution) // 2)
    top, left = offset
    picture = picture.crop((left, top, left + resolution, top + resolution))
    array = np.asarray(picture, dtype=np.float32).transpose(2, 0, 1)
    return array / 127.5 - 1.0


def load_coarse_dataset(
    location: str | os.PathLike,
    resolution: int,
    background: str = "full",
    splits_file: str | os.PathLike | None = None,
    all_cases: bool = True,
    skip_bad: bool = False,
    report_path: str | os.PathLike | None = None,
) -> CoarseDataset:
    """The records `validate` accepts (every file opened and checked before training), of the
    cases this stage may learn from (`metadata.subset.training_records`)."""
    meta_file, checked = read_dataset(location, skip_bad, report_path)
    records, _ = training_records(meta_file, checked, splits_file, all_cases, "coarse stage")
    paths = [resolve(meta_file, r.file_name) for r in records]
    prompts = [combine_prompt(r.text_nd, r.text_bg, background) for r in records]
    masks = [resolve(meta_file, r.condition_FG) for r in records]
    return CoarseDataset(records, paths, prompts, resolution, masks)
