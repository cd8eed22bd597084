"""Synthetic-data quality metrics on cases with a known answer, and the memorization test."""

from __future__ import annotations

import pytest
import torch

from generation.filtering.quality import (
    frechet_distance,
    kernel_distance,
    memorized_fraction,
    precision_recall,
    quality_report,
)


def features(n: int, seed: int, shift: float = 0.0, dim: int = 12) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)) + shift


def test_identical_sets_are_at_distance_zero_with_full_precision_and_recall():
    real = features(80, 0)
    assert frechet_distance(real, real.clone()) == pytest.approx(0.0, abs=1e-6)
    assert precision_recall(real, real.clone()) == (1.0, 1.0)


def test_disjoint_sets_have_no_recall_and_a_large_distance():
    real, far = features(80, 0), features(80, 1, shift=20.0)
    precision, recall = precision_recall(real, far)
    assert precision == 0.0 and recall == 0.0
    same_law = frechet_distance(real, features(80, 2))
    assert frechet_distance(real, far) > 100 * same_law
    assert kernel_distance(real, far)[0] > 100 * abs(kernel_distance(real, features(80, 2))[0])


def test_a_collapsed_generator_keeps_precision_and_loses_recall():
    """Mode collapse: every synthetic feature near one real point."""
    real = features(100, 0)
    collapsed = real[:1] + 0.01 * features(100, 3)
    precision, recall = precision_recall(real, collapsed)
    assert precision > 0.9 and recall < 0.2


def test_copies_of_train_images_are_flagged_as_memorized_and_new_samples_are_not():
    train, held = features(60, 0), features(40, 1)
    flagged, threshold = memorized_fraction(train, held, train[:10] + 1e-4)
    assert flagged == 1.0 and threshold > 0
    assert memorized_fraction(train, held, features(40, 5))[0] < 0.2


def test_report_gives_real_vs_real_reference_and_every_mode():
    train, held = features(50, 0), features(30, 1)
    report = quality_report(train, held, {"diversify": features(20, 2), "one": features(1, 3)})
    assert set(report["modes"]) == {"diversify"}  # a set of one image has no distribution
    assert report["real_vs_real"]["frechet"] > 0 and report["n_held_out"] == 30
    row = report["modes"]["diversify"]
    assert set(row) >= {"vs_train", "vs_held_out", "memorized_fraction"}
    with pytest.raises(ValueError, match="at least 2"):
        quality_report(train, held[:1], {})
