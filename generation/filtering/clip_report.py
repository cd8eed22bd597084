"""Distributions of CLIP scores and the matched-vs-mismatched test, with confidence intervals."""

from __future__ import annotations

import numpy as np
from scipy import stats


def describe(scores: np.ndarray, seed: int = 0, resamples: int = 2000) -> dict:
    """Mean with a bootstrap 95% CI, and quartiles."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        return {"n": 0}
    rng = np.random.default_rng(seed)
    means = rng.choice(scores, size=(resamples, scores.size), replace=True).mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    q1, median, q3 = np.percentile(scores, [25, 50, 75])
    return {
        "n": int(scores.size),
        "mean": float(scores.mean()),
        "mean_ci95": [float(low), float(high)],
        "std": float(scores.std(ddof=1)) if scores.size > 1 else 0.0,
        "q1": float(q1),
        "median": float(median),
        "q3": float(q3),
    }


def compare_paired(matched: np.ndarray, mismatched: np.ndarray, seed: int = 0) -> dict:
    """Same images, own text vs another text: paired Wilcoxon test and mean difference CI."""
    matched = np.asarray(matched, dtype=np.float64)
    mismatched = np.asarray(mismatched, dtype=np.float64)
    difference = matched - mismatched
    if np.all(difference == 0):  # the test is undefined; nothing separates the two
        statistic, p_value = 0.0, 1.0
    else:
        test = stats.wilcoxon(matched, mismatched, alternative="greater")
        statistic, p_value = float(test.statistic), float(test.pvalue)
    auc = float(np.mean(matched[:, None] > mismatched[None, :]))
    return {
        "mean_difference": describe(difference, seed),
        "fraction_matched_higher": float(np.mean(difference > 0)),
        "wilcoxon_statistic": statistic,
        "wilcoxon_p_greater": p_value,
        "auc_matched_vs_mismatched": auc,
    }
