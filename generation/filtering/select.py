"""Which synthetic images to keep: CLIP rule first, then MoSo pruning, each class separately.

Classes are indexed separately so a rare subtype is never emptied by a common one: the CLIP
quantile and the MoSo prune ratio are applied within each label.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

CLIP_THRESHOLD = "clip_below_threshold"
CLIP_QUANTILE = "clip_below_class_quantile"
MOSO_PRUNED = "moso_pruned"


@dataclass
class FilterConfig:
    clip_threshold: float | None = None  # drop images scoring below this (0-100)
    clip_quantile: float | None = None  # drop this lowest fraction per class
    moso_prune_ratio: float = 0.0  # drop this lowest-MoSo fraction per class (of CLIP survivors)

    def __post_init__(self) -> None:
        if self.clip_threshold is not None and self.clip_quantile is not None:
            raise ValueError("give a CLIP threshold or a CLIP quantile, not both")
        if self.clip_quantile is not None and not 0.0 <= self.clip_quantile < 1.0:
            raise ValueError(f"clip_quantile must be in [0, 1), got {self.clip_quantile}")
        if not 0.0 <= self.moso_prune_ratio < 1.0:
            raise ValueError(f"moso_prune_ratio must be in [0, 1), got {self.moso_prune_ratio}")

    @property
    def uses_clip(self) -> bool:
        return self.clip_threshold is not None or self.clip_quantile is not None


def lowest(indices: list[int], values: np.ndarray, count: int) -> set[int]:
    """The `count` indices with the lowest values (ties broken by position, stable)."""
    ranked = sorted(indices, key=lambda i: (values[i], i))
    return set(ranked[:count])


def select(
    labels: list[str], clip: np.ndarray, moso: np.ndarray, config: FilterConfig
) -> list[str]:
    """Drop reason per image ("" = kept). `clip`/`moso` may hold NaN only for unused rules."""
    reasons = [""] * len(labels)
    for label in sorted(set(labels)):
        members = [i for i, name in enumerate(labels) if name == label]
        if config.clip_threshold is not None:
            for i in members:
                if clip[i] < config.clip_threshold:
                    reasons[i] = CLIP_THRESHOLD
        elif config.clip_quantile is not None:
            count = math.floor(config.clip_quantile * len(members))
            for i in lowest(members, clip, count):
                reasons[i] = CLIP_QUANTILE
        survivors = [i for i in members if not reasons[i]]
        count = math.floor(config.moso_prune_ratio * len(survivors))
        for i in lowest(survivors, moso, count):
            reasons[i] = MOSO_PRUNED
    return reasons
