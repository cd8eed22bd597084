"""Training items for the fine stage: image, condition_FG, condition_BG, text_nd, text_bg.

Targets are [-1, 1] (the VAE's range), conditions [0, 1] (ControlNet's); the same crop offset
and the same flip reach the image and both conditions. Items come from the case-level "train"
split by default so the held-out cases stay unseen (metadata.splits, same seed as the exporter).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from generation.coarse.data import load_image
from generation.coarse.prompts import combine_prompt
from generation.fine.conditions import condition_array, open_rgb, resized_size
from metadata.records import MetadataError, MetadataRecord, resolve
from metadata.subset import records_in_splits, training_records
from metadata.validate import read_dataset


@dataclass
class FineDataset:
    """Records with resolved image/condition paths and the three texts each branch reads."""

    records: list[MetadataRecord]
    image_paths: list[Path]
    fg_paths: list[Path]
    bg_paths: list[Path]
    prompts: list[str]
    resolution: int

    def __len__(self) -> int:
        return len(self.records)

    @property
    def texts_nd(self) -> list[str]:
        return [record.text_nd for record in self.records]

    @property
    def texts_bg(self) -> list[str]:
        return [record.text_bg for record in self.records]

    def load_pixels(self, indices: list[int], crops: list[tuple[int, int]] | None = None):
        """Target images, [-1, 1] float [B, 3, R, R]; `crops` gives (top, left), None = centre."""
        return torch.from_numpy(
            np.stack(
                [
                    load_image(self.image_paths[i], self.resolution, crops[k] if crops else None)
                    for k, i in enumerate(indices)
                ]
            )
        )

    def load_conditions(
        self, indices: list[int], crops: list[tuple[int, int]] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(condition_FG, condition_BG), each [0, 1] float [B, 3, R, R], cropped like the image."""
        pairs = []
        for paths in (self.fg_paths, self.bg_paths):
            arrays = [
                condition_array(open_rgb(paths[i]), self.resolution, crops[k] if crops else None)
                for k, i in enumerate(indices)
            ]
            pairs.append(torch.from_numpy(np.stack(arrays)))
        return pairs[0], pairs[1]

    def crop_range(self, index: int) -> tuple[int, int]:
        """Spare rows/columns after the resize, for random crops (same for all three images)."""
        with Image.open(self.image_paths[index]) as image:
            height, width = resized_size(image.size[1], image.size[0], self.resolution)
        return height - self.resolution, width - self.resolution


@dataclass
class ConditionCache:
    """Centre-cropped conditions of every item as uint8, flipped per step (a flip is exact)."""

    fg: torch.Tensor
    bg: torch.Tensor

    @classmethod
    def build(cls, dataset: FineDataset, batch_size: int = 64) -> ConditionCache:
        fgs, bgs = [], []
        for start in range(0, len(dataset), batch_size):
            fg, bg = dataset.load_conditions(
                list(range(start, min(start + batch_size, len(dataset))))
            )
            fgs.append((fg * 255).round().to(torch.uint8))
            bgs.append((bg * 255).round().to(torch.uint8))
        return cls(torch.cat(fgs), torch.cat(bgs))

    def batch(
        self, indices: torch.Tensor, flips: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return tuple(  # type: ignore[return-value]
            flip_where(source[indices].float() / 255.0, flips) for source in (self.fg, self.bg)
        )


def flip_where(images: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Mirror (left-right) the images whose flag is set."""
    mask = flips.to(images.device)[:, None, None, None]
    return torch.where(mask, torch.flip(images, dims=[-1]), images)


def load_fine_dataset(
    location: str | os.PathLike,
    resolution: int,
    prompt_background: str = "full",
    splits_file: str | os.PathLike | None = None,
    all_cases: bool = True,
    skip_bad: bool = False,
    report_path: str | os.PathLike | None = None,
    split: str = "train",
) -> FineDataset:
    """The records `validate` accepts (files, sizes, masks, words checked before training), of
    the cases this stage may learn from; `split="valid"` reads the splits file's valid cases
    (for validation grids)."""
    meta_file, checked = read_dataset(location, skip_bad, report_path)
    if split == "train":
        records, _ = training_records(meta_file, checked, splits_file, all_cases, "fine stage")
    elif splits_file:
        records = records_in_splits(checked, splits_file, (split,), False, meta_file)
    else:
        raise MetadataError(meta_file, f"the {split!r} split needs a splits file")
    return fine_dataset(meta_file, records, resolution, prompt_background)


def fine_dataset(
    meta_file: Path, records: list[MetadataRecord], resolution: int, prompt_background: str
) -> FineDataset:
    """Checked records (paths relative to `meta_file`) as the fine stage's items. Lesion-free
    frames are left out: the foreground branch learns lesions from masks (those frames train the
    coarse stage and serve as backgrounds)."""
    records = [r for r in records if not r.attributes.get("lesion_free")]
    if not records:
        raise MetadataError(meta_file, "fine stage: no frame with a lesion to learn from")
    images = [resolve(meta_file, r.file_name) for r in records]
    fgs = [resolve(meta_file, r.condition_FG) for r in records]
    bgs = [resolve(meta_file, r.condition_BG) for r in records]
    prompts = [combine_prompt(r.text_nd, r.text_bg, prompt_background) for r in records]
    return FineDataset(records, images, fgs, bgs, prompts, resolution)
