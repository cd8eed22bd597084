"""Image–text pairs for CLIP: real frames with their `text_nd` (the nodule description)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from generation.filtering.images import open_rgb
from metadata.records import MetadataRecord, resolve


class PairDataset(Dataset):
    """Images are decoded once (the datasets are small); transforms run per access."""

    def __init__(self, paths: list[Path], texts: list[str], transform: Callable, tokenizer):
        if len(paths) != len(texts):
            raise ValueError("paths and texts differ in length")
        self.images: list[Image.Image] = [open_rgb(path) for path in paths]
        self.tokens = tokenizer(texts) if texts else torch.zeros(0, 1, dtype=torch.long)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.images[index]), self.tokens[index]


def record_pairs(records: list[MetadataRecord], meta_file: Path) -> tuple[list[Path], list[str]]:
    return [resolve(meta_file, r.file_name) for r in records], [r.text_nd for r in records]
