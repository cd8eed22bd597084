"""MoSo end to end: partition the pool, train surrogates, score sampled checkpoints, sum."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from generation.filtering.moso_params import MosoConfig
from generation.filtering.moso_score import checkpoint_scores
from generation.filtering.moso_surrogate import last_layer_parameters
from generation.filtering.moso_train import load_surrogate, train_surrogate


def partition_indices(labels: np.ndarray, partitions: int, seed: int) -> list[np.ndarray]:
    """Class-stratified random partitions (the reference uses contiguous index blocks)."""
    rng = np.random.default_rng(seed)
    buckets: list[list[int]] = [[] for _ in range(partitions)]
    offset = 0
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        for position, index in enumerate(members):
            buckets[(offset + position) % partitions].append(int(index))
        offset += len(members)
    parts = [np.sort(np.asarray(bucket, dtype=np.int64)) for bucket in buckets]
    if any(len(part) < 2 for part in parts):
        raise ValueError(f"{partitions} partitions leave a partition with fewer than 2 samples")
    return parts


def sample_checkpoints(checkpoints: list, count: int, seed: int) -> list:
    """Uniformly sampled checkpoints (the estimator's expectation over training time)."""
    return sorted(random.Random(seed).sample(checkpoints, min(count, len(checkpoints))), key=id)


def moso_scores(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    config: MosoConfig,
    work_dir: Path,
    scored: np.ndarray | None = None,
) -> np.ndarray:
    """MoSo score of every pool sample (higher = more informative; prune the lowest).

    With a boolean `scored` mask, only those samples get a score (NaN elsewhere): the others
    still train the surrogate and count in each mean gradient, so the scores are the same."""
    labels_np = labels.numpy()
    scores = np.zeros(images.shape[0], dtype=np.float64)
    if scored is not None:
        scores[~scored] = np.nan
    for part, index in enumerate(partition_indices(labels_np, config.partitions, config.seed)):
        subset = torch.from_numpy(index)
        own = None if scored is None else torch.from_numpy(np.flatnonzero(scored[index]))
        checkpoints = train_surrogate(
            images[subset],
            labels[subset],
            num_classes,
            config,
            Path(work_dir) / f"partition_{part}",
            seed=config.seed + part,
        )
        for checkpoint in sample_checkpoints(
            checkpoints, config.sampled_checkpoints, config.seed * 7919 + part
        ):
            model = load_surrogate(checkpoint, num_classes, config)
            names = last_layer_parameters(model, config.last_layers)
            values = checkpoint_scores(
                model,
                images[subset],
                labels[subset],
                names,
                config.form,
                config.gradients,
                config.chunk_size,
                own,
            )
            targets = index if own is None else index[own.numpy()]
            scores[targets] += checkpoint.lr * values.numpy()
    return scores
