"""Decode every image once into a uint8 tensor cache; batches are then plain tensor indexing, so
data loading never bottlenecks training (augmentation runs batched on the training device).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset, Sampler

from classifier.layout import ImageItem, LayoutError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def letterbox(path: Path, size: int) -> np.ndarray:
    """RGB uint8 [size, size, 3]: longer side resized to `size`, centred on black (no cropping,
    so the nodule is never cut off whatever the frame's aspect ratio)."""
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            scale = size / max(image.size)
            width = max(1, round(image.width * scale))
            height = max(1, round(image.height * scale))
            image = image.resize((width, height), Image.Resampling.BILINEAR)
            canvas = Image.new("RGB", (size, size))
            canvas.paste(image, ((size - width) // 2, (size - height) // 2))
            return np.array(canvas)
    except (OSError, UnidentifiedImageError) as error:
        raise LayoutError(path, f"cannot read image ({error})") from None


class ImageCache:
    """Path -> decoded uint8 CHW tensor at one size, shared by every run of an experiment."""

    def __init__(self, size: int):
        self.size = size
        self._tensors: dict[Path, torch.Tensor] = {}

    def stack(self, items: list[ImageItem]) -> torch.Tensor:
        for item in items:
            if item.path not in self._tensors:
                array = letterbox(item.path, self.size)
                self._tensors[item.path] = torch.from_numpy(array).permute(2, 0, 1).contiguous()
        if not items:
            return torch.zeros(0, 3, self.size, self.size, dtype=torch.uint8)
        return torch.stack([self._tensors[item.path] for item in items])


class CachedImages(Dataset):
    """(uint8 image, float label) pairs from the cache; duplicates share the decoded tensor."""

    def __init__(self, items: list[ImageItem], cache: ImageCache):
        self.items = items
        self.images = cache.stack(items)
        self.labels = torch.tensor([item.label for item in items], dtype=torch.float32)
        self.synthetic = torch.tensor([item.synthetic for item in items], dtype=torch.bool)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(self.images[i], self.labels[i]) for i in indices]


class EpochSampler(Sampler[int]):
    """Seeded per epoch (seed, epoch), so a resumed run draws exactly the same batches.

    With `weights`, draws len(weights) indices with replacement (class-balanced sampler)."""

    def __init__(self, size: int, seed: int, weights: torch.Tensor | None = None):
        self.size = size
        self.seed = seed
        self.weights = weights
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        if self.weights is not None:
            order = torch.multinomial(self.weights, self.size, True, generator=generator)
        else:
            order = torch.randperm(self.size, generator=generator)
        return iter(order.tolist())


def balanced_weights(labels: torch.Tensor, synthetic: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample weights giving each class the same expected share of a batch.

    With `synthetic` (a mask), generated images also get the same share of every class that
    has both kinds: the largest class's natural share (the rare class, which received them).
    A generator's look (its smoother speckle) then says nothing about the label: with
    generated images in one class only, or at different shares, a classifier can learn
    "generated, so positive" instead of the subtype (benchmarks/synthetic_shortcut.py)."""
    positives = labels.sum().item()
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return torch.ones(len(labels))
    weights = torch.where(labels > 0.5, 0.5 / positives, 0.5 / negatives).double()
    if synthetic is None or not synthetic.any():
        return weights
    classes = [labels > 0.5, labels <= 0.5]
    mixed = [c for c in classes if (c & synthetic).any() and (c & ~synthetic).any()]
    if len(mixed) < 2:
        return weights
    share = max((c & synthetic).sum().item() / c.sum().item() for c in mixed)
    for members in mixed:
        generated, real = members & synthetic, members & ~synthetic
        weights[generated] = 0.5 * share / generated.sum().item()
        weights[real] = 0.5 * (1 - share) / real.sum().item()
    return weights


def positive_weight(labels: torch.Tensor) -> float:
    """neg/pos ratio for BCE's pos_weight (1 when a class is absent)."""
    positives = labels.sum().item()
    negatives = len(labels) - positives
    return negatives / positives if positives and negatives else 1.0


def normalize(batch: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, device=batch.device, dtype=batch.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=batch.device, dtype=batch.dtype).view(1, 3, 1, 1)
    return (batch - mean) / std


def to_float(batch: torch.Tensor) -> torch.Tensor:
    return batch.float().div_(255.0)
