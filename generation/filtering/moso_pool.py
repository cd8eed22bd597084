"""The MoSo candidate pool: real training images plus synthetic images, one label space."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from generation.filtering.images import load_gray_stack
from generation.filtering.manifest import SyntheticImage
from generation.filtering.splits import split_by_case
from metadata.records import resolve
from metadata.validate import read_dataset


@dataclass
class Pool:
    ids: list[str]
    sources: list[str]  # "real" | "synthetic"
    labels: list[str]
    paths: list[Path]

    @property
    def classes(self) -> list[str]:
        return sorted(set(self.labels))

    def label_tensor(self) -> torch.Tensor:
        index = {name: i for i, name in enumerate(self.classes)}
        return torch.tensor([index[name] for name in self.labels], dtype=torch.long)

    def image_tensor(self, size: int) -> torch.Tensor:
        return load_gray_stack(self.paths, size)


def build_pool(
    dataset: str | Path | None,
    synthetic: list[SyntheticImage],
    holdout_fraction: float,
    seed: int,
) -> Pool:
    """Real train-split images (held-out cases excluded, same split as CLIP) + synthetic."""
    pool = Pool([], [], [], [])
    if dataset is not None:
        meta_file, checked = read_dataset(dataset)
        real = [r for r in checked if not r.synthetic and r.label]
        train, _ = split_by_case(real, holdout_fraction, seed)
        for record in train:
            pool.ids.append(f"real:{record.file_name}")
            pool.sources.append("real")
            pool.labels.append(record.label)
            pool.paths.append(resolve(meta_file, record.file_name))
    for image in synthetic:
        pool.ids.append(image.id)
        pool.sources.append("synthetic")
        pool.labels.append(image.label)
        pool.paths.append(image.path)
    return pool
