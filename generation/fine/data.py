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
from metadata.records import MetadataError, MetadataRecord, metadata_path, read_metadata, resolve
from metadata.splits import SplitConfig, assign_records


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


def check_same_size(meta_file: Path, line: int, paths: list[Path]) -> None:
    sizes = []
    for path in paths:
        try:
            with Image.open(path) as image:
                sizes.append(image.size)
        except (OSError, ValueError) as error:
            raise MetadataError(path, f"unreadable image ({error})") from None
    if len(set(sizes)) != 1:
        detail = ", ".join(f"{p.parent.name}/{p.name} {s[0]}x{s[1]}" for p, s in zip(paths, sizes))
        raise MetadataError(meta_file, f"image and conditions differ in size ({detail})", line)


def select_records(
    records: list[MetadataRecord], split: str, split_config: SplitConfig
) -> list[int]:
    """Indices of the records to use: all, or those in the case-level `split`."""
    if split == "all":
        return list(range(len(records)))
    assignment = assign_records(records, split_config)
    return [i for i, record in enumerate(records) if assignment[record.file_name] == split]


def load_fine_dataset(
    location: str | os.PathLike,
    resolution: int,
    prompt_background: str = "full",
    split: str = "all",
    split_config: SplitConfig | None = None,
) -> FineDataset:
    """Read metadata.jsonl; check every image and condition exists and sizes agree."""
    meta_file = metadata_path(location)
    all_records = read_metadata(meta_file)
    chosen = select_records(all_records, split, split_config or SplitConfig())
    if not chosen:
        raise MetadataError(meta_file, f"no records in split {split!r}")
    records, images, fgs, bgs = [], [], [], []
    for index in chosen:
        record, line = all_records[index], index + 1
        paths = []
        for key in ("file_name", "condition_FG", "condition_BG"):
            relative = getattr(record, key)
            path = resolve(meta_file, relative)
            if not path.is_file():
                raise MetadataError(meta_file, f"{key} {relative!r} not found ({path})", line)
            paths.append(path)
        check_same_size(meta_file, line, paths)
        records.append(record)
        images.append(paths[0])
        fgs.append(paths[1])
        bgs.append(paths[2])
    prompts = [combine_prompt(r.text_nd, r.text_bg, prompt_background) for r in records]
    return FineDataset(records, images, fgs, bgs, prompts, resolution)
