"""Off-distribution rule: drop synthetic frames that look like no real frame at all.

Pure noise, blank or broken generations are not something MoSo reliably ranks low: with a
pool of ~900 real frames the phantom benchmark saw noise land anywhere from the bottom to the
77th percentile by seed. A frame's highest thumbnail correlation with the real train frames
says how much it looks like real ultrasound. The scale comes from the real data itself: the
lowest such correlation among held-out real frames (patients the train frames never saw). The
threshold is a fraction of it (FilterConfig.off_distribution_fraction, 0.5): plausible but
atypical generations sit just below the held-out minimum (DDTI: 7 of 64 generated frames
between 0.52 and its 0.585), pure noise far below (at most 0.16 on the phantom and on DDTI).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from generation.filtering.images import thumbnails
from generation.filtering.splits import split_by_case
from metadata.records import MetadataError, metadata_path, read_metadata, resolve


@dataclass
class RealReference:
    """Thumbnails of the real train frames and the lowest held-out nearest correlation."""

    train: np.ndarray
    held_out_minimum: float
    held_out_frames: int


def nearest_correlation(
    vectors: np.ndarray, reference: np.ndarray, chunk: int = 1024
) -> np.ndarray:
    """Each row's highest Pearson correlation with any reference row (thumbnail vectors)."""
    if len(reference) == 0:
        raise ValueError("the reference set is empty")
    best = np.full(len(vectors), -1.0)
    for start in range(0, len(reference), chunk):
        block = vectors @ reference[start : start + chunk].T
        best = np.maximum(best, block.max(axis=1, initial=-1.0))
    return best


def unlike_real(nearest: np.ndarray, threshold: float) -> np.ndarray:
    """Below the threshold; the margin absorbs the rounding of different BLAS block orders, so
    at fraction 1 the least typical held-out frame itself is not flagged."""
    return nearest < threshold - 1e-9


def real_reference(
    dataset: str | Path, holdout_fraction: float = 0.2, seed: int = 0
) -> RealReference:
    """Split the real frames by case; measure the held-out frames' least nearest correlation."""
    meta_file = metadata_path(dataset)
    real = [r for r in read_metadata(meta_file) if not r.synthetic]
    train, held = split_by_case(real, holdout_fraction, seed)
    if not train or not held:
        raise MetadataError(
            meta_file,
            f"the off-distribution rule needs real train and held-out cases; "
            f"{len(train)} train and {len(held)} held-out frames at holdout {holdout_fraction}",
        )
    train_vectors = thumbnails([resolve(meta_file, r.file_name) for r in train])
    held_vectors = thumbnails([resolve(meta_file, r.file_name) for r in held])
    minimum = float(nearest_correlation(held_vectors, train_vectors).min())
    return RealReference(train_vectors, minimum, len(held))
