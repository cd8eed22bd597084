"""Classifier metrics against scikit-learn on known inputs, and the bootstrap machinery."""

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from classifier.metrics import (
    auc,
    auc_ci,
    binary_metrics,
    bootstrap_indices,
    choose_threshold,
    paired_difference,
)


@pytest.fixture
def scored():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 60)
    # rounded so there are ties, shifted so the AUC is informative but not perfect
    scores = np.round(rng.random(60) * 0.7 + labels * 0.3, 1)
    return labels, scores


def test_auc_matches_sklearn_with_ties(scored):
    labels, scores = scored
    assert auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert np.isnan(auc(np.ones(5), np.arange(5)))


def test_binary_metrics_match_sklearn(scored):
    labels, scores = scored
    threshold = 0.5
    got = binary_metrics(labels, scores, threshold)
    predicted = (scores >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(labels, predicted).ravel()
    assert (got["tp"], got["fp"], got["tn"], got["fn"]) == (tp, fp, tn, fn)
    assert got["sensitivity"] == pytest.approx(recall_score(labels, predicted))
    assert got["specificity"] == pytest.approx(recall_score(labels, predicted, pos_label=0))
    assert got["ppv"] == pytest.approx(precision_score(labels, predicted))
    assert got["npv"] == pytest.approx(precision_score(labels, predicted, pos_label=0))
    assert got["f1"] == pytest.approx(f1_score(labels, predicted))
    assert got["accuracy"] == pytest.approx(accuracy_score(labels, predicted))


def test_known_confusion_matrix():
    labels = np.array([1, 1, 1, 0, 0, 0, 0])
    scores = np.array([0.9, 0.8, 0.2, 0.7, 0.1, 0.1, 0.3])
    got = binary_metrics(labels, scores, 0.5)
    assert (got["tp"], got["fp"], got["tn"], got["fn"]) == (2, 1, 3, 1)
    assert got["sensitivity"] == pytest.approx(2 / 3)
    assert got["npv"] == pytest.approx(3 / 4)


def test_youden_threshold_maximises_j(scored):
    labels, scores = scored
    threshold = choose_threshold(labels, scores, "youden")
    fpr, tpr, thresholds = roc_curve(labels, scores)
    best = max(tpr[i] - fpr[i] for i in range(len(thresholds)) if np.isfinite(thresholds[i]))
    got = binary_metrics(labels, scores, threshold)
    assert got["sensitivity"] + got["specificity"] - 1 == pytest.approx(best)


def test_target_sensitivity_threshold(scored):
    labels, scores = scored
    threshold = choose_threshold(labels, scores, "sensitivity", 0.9)
    assert binary_metrics(labels, scores, threshold)["sensitivity"] >= 0.9
    higher = np.unique(scores[scores > threshold])
    if len(higher):  # the next higher cut-off must miss the target: best specificity chosen
        assert binary_metrics(labels, scores, higher.min())["sensitivity"] < 0.9
    with pytest.raises(ValueError, match="unknown threshold"):
        choose_threshold(labels, scores, "median")


def test_bootstrap_keeps_cases_whole_and_strata():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    groups = np.array(["a", "a", "b", "b", "c", "c", "d", "d"])
    for index in bootstrap_indices(labels, 50, seed=1, groups=groups):
        assert labels[index].sum() == 4  # two positive cases of two images each
        for group in np.unique(groups[index]):
            count = (groups[index] == group).sum()
            assert count % 2 == 0


def test_auc_ci_contains_estimate_and_narrows_with_data():
    rng = np.random.default_rng(0)

    def width(n):
        labels = rng.integers(0, 2, n)
        scores = rng.random(n) + labels * 0.5
        estimate = auc_ci(labels, scores, n_resamples=300, seed=0)
        assert estimate.low <= estimate.value <= estimate.high
        return estimate.high - estimate.low

    assert width(800) < width(40)


def test_paired_difference_identical_and_different_arms():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 200)
    good = rng.random((3, 200)) + labels * 1.0
    poor = rng.random((3, 200)) + labels * 0.1
    same = paired_difference(labels, good, good, n_resamples=200)
    assert same.value == 0 and same.low == 0 and same.high == 0 and same.p_value == 1
    better = paired_difference(labels, good, poor, n_resamples=200)
    assert better.value > 0.2 and better.low > 0 and better.p_value < 0.01


def test_resampling_seeds_widens_the_ci_by_the_training_spread():
    """Three seeds of one arm far apart (AUC ~0.6, ~0.75, ~0.9) on a large test set: the test
    bootstrap alone gives a narrow CI; resampling the seeds too gives one that spans them.
    With one seed there is nothing to resample and the CI is unchanged."""
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 3000)
    spread = np.stack([rng.random(3000) + labels * strength for strength in (0.35, 0.9, 1.8)])
    steady = np.stack([rng.random(3000) + labels * 0.9 for _ in range(3)])
    narrow = auc_ci(labels, spread, n_resamples=300)
    wide = auc_ci(labels, spread, n_resamples=300, resample_seeds=True)
    assert wide.value == narrow.value
    assert wide.high - wide.low > 4 * (narrow.high - narrow.low)
    one = auc_ci(labels, spread[1], n_resamples=300, resample_seeds=True)
    assert one == auc_ci(labels, spread[1], n_resamples=300)
    test_only = paired_difference(labels, spread, steady, n_resamples=300)
    both = paired_difference(labels, spread, steady, n_resamples=300, resample_seeds=True)
    assert both.value == test_only.value
    assert both.high - both.low > 4 * (test_only.high - test_only.low)
    assert both.p_value > test_only.p_value
