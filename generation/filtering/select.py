"""Which synthetic images to keep: frames unlike any real frame go first (with a real reference,
generation/filtering/off_distribution.py), then the CLIP rule, near-copies, MoSo, each class
separately.

Classes are indexed separately so a rare subtype is never emptied by a common one: the CLIP
quantile and the MoSo prune ratio are applied within each label. Near-copies get their own rule
because MoSo cannot see them: a copy's gradient equals its original's, so to first order it
looks exactly as useful as the original (generation/filtering/moso_score.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from metadata.near_duplicates import THRESHOLD

CLIP_THRESHOLD = "clip_below_threshold"
CLIP_QUANTILE = "clip_below_class_quantile"
MOSO_PRUNED = "moso_pruned"
DUPLICATE = "near_copy_of_earlier_image"
OFF_DISTRIBUTION = "unlike_any_real_frame"


@dataclass
class FilterConfig:
    clip_threshold: float | None = None  # drop images scoring below this (0-100)
    clip_quantile: float | None = None  # drop this lowest fraction per class
    moso_prune_ratio: float = 0.0  # drop this lowest-MoSo fraction per class (of CLIP survivors)
    drop_duplicates: bool = True  # drop near-copies of an earlier kept image (any class)
    # with a real reference: threshold = this fraction of the least typical held-out frame's
    # nearest-real correlation (generation/filtering/off_distribution.py)
    off_distribution_fraction: float = 0.5

    def __post_init__(self) -> None:
        if self.clip_threshold is not None and self.clip_quantile is not None:
            raise ValueError("give a CLIP threshold or a CLIP quantile, not both")
        if self.clip_quantile is not None and not 0.0 <= self.clip_quantile < 1.0:
            raise ValueError(f"clip_quantile must be in [0, 1), got {self.clip_quantile}")
        if not 0.0 < self.off_distribution_fraction <= 1.0:
            raise ValueError(
                f"the off-distribution fraction must be in (0, 1], got "
                f"{self.off_distribution_fraction}"
            )
        if not 0.0 <= self.moso_prune_ratio < 1.0:
            raise ValueError(f"moso_prune_ratio must be in [0, 1), got {self.moso_prune_ratio}")

    @property
    def uses_clip(self) -> bool:
        return self.clip_threshold is not None or self.clip_quantile is not None


def lowest(indices: list[int], values: np.ndarray, count: int) -> set[int]:
    """The `count` indices with the lowest values (ties broken by position, stable)."""
    ranked = sorted(indices, key=lambda i: (values[i], i))
    return set(ranked[:count])


def near_copies(
    indices: list[int], vectors: np.ndarray, threshold: float = THRESHOLD, block: int = 1024
) -> set[int]:
    """Members of `indices` that correlate >= `threshold` with an earlier kept member (in order).

    The greedy rule (keep an image unless it copies one already kept) is decided a block of
    `block` candidates at a time: one matrix product against everything kept so far, one inside
    the block, then a short pass over the block's own rows. Same answers as one image at a
    time (tests/test_filter.py), at matrix-product speed: 30k images in seconds, not hours."""
    copies: set[int] = set()
    kept = np.empty((len(indices), vectors.shape[1]), dtype=vectors.dtype)
    count = 0
    for start in range(0, len(indices), block):
        members = indices[start : start + block]
        rows = vectors[members]
        earlier = (rows @ kept[:count].T).max(axis=1) >= threshold if count else None
        inside = rows @ rows.T >= threshold
        kept_here: list[int] = []
        for position, index in enumerate(members):
            if (earlier is not None and earlier[position]) or inside[position, kept_here].any():
                copies.add(index)
            else:
                kept_here.append(position)
        kept[count : count + len(kept_here)] = rows[kept_here]
        count += len(kept_here)
    return copies


def select(
    labels: list[str],
    clip: np.ndarray,
    moso: np.ndarray,
    config: FilterConfig,
    thumbnails: np.ndarray | None = None,
    off_distribution: np.ndarray | None = None,
) -> list[str]:
    """Drop reason per image ("" = kept). `clip`/`moso` may hold NaN only for unused rules;
    `thumbnails` (near_duplicates.thumbnail_vector rows) are needed when drop_duplicates;
    `off_distribution` (bool per image) marks frames the off-distribution rule drops first."""
    reasons = [""] * len(labels)
    if off_distribution is not None:
        if len(off_distribution) != len(labels):
            raise ValueError("off_distribution needs one flag per image")
        reasons = [OFF_DISTRIBUTION if flag else "" for flag in off_distribution]
    for label in sorted(set(labels)):
        members = [i for i, name in enumerate(labels) if name == label and not reasons[i]]
        if config.clip_threshold is not None:
            for i in members:
                if clip[i] < config.clip_threshold:
                    reasons[i] = CLIP_THRESHOLD
        elif config.clip_quantile is not None:
            count = math.floor(config.clip_quantile * len(members))
            for i in lowest(members, clip, count):
                reasons[i] = CLIP_QUANTILE
    if config.drop_duplicates:
        if thumbnails is None:
            raise ValueError("drop_duplicates needs the images' thumbnails")
        for i in near_copies([i for i in range(len(labels)) if not reasons[i]], thumbnails):
            reasons[i] = DUPLICATE
    for label in sorted(set(labels)):
        members = [i for i, name in enumerate(labels) if name == label]
        survivors = [i for i in members if not reasons[i]]
        count = math.floor(config.moso_prune_ratio * len(survivors))
        for i in lowest(survivors, moso, count):
            reasons[i] = MOSO_PRUNED
    return reasons
