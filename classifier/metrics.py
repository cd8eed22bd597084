"""Test-set metrics: AUC with bootstrap CIs, threshold choice on validation, the confusion-matrix
metrics at that threshold, and the paired bootstrap between arms (same test images, same
resamples, averaged over seeds).

Bootstrap resamples are stratified by class; when case ids are given, whole cases are resampled
(images of one patient are not independent). Across several seeds the experiment also resamples
the seeds (`resample_seeds`): on a large test set training variance, not test sampling, is most
of the uncertainty.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import roc_curve


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mann–Whitney AUC (ties count half); nan when a class is missing."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def bootstrap_indices(
    labels: np.ndarray, n_resamples: int, seed: int, groups: np.ndarray | None = None
) -> list[np.ndarray]:
    """Index arrays of stratified (by class; by case when `groups` is given) resamples."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels).astype(int)
    if groups is None:
        groups = np.arange(len(labels))
    groups = np.asarray(groups)
    unique, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(unique))]
    group_label = np.array([labels[m].max() for m in members])
    strata = [np.flatnonzero(group_label == c) for c in (0, 1)]
    resamples = []
    for _ in range(n_resamples):
        chosen = np.concatenate([rng.choice(s, len(s)) for s in strata if len(s)])
        resamples.append(np.concatenate([members[g] for g in chosen]))
    return resamples


def percentile_ci(values: np.ndarray, ci: float) -> tuple[float, float]:
    values = np.asarray(values)[np.isfinite(values)]
    if not len(values):
        return float("nan"), float("nan")
    tail = (1 - ci) / 2 * 100
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


@dataclass
class Estimate:
    value: float
    low: float
    high: float
    p_value: float = float("nan")

    def text(self, digits: int = 3) -> str:
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def mean_auc(labels: np.ndarray, scores: np.ndarray, index: np.ndarray | None = None) -> float:
    """AUC averaged over seeds; `scores` is [seeds, n] (or [n])."""
    scores = np.atleast_2d(scores)
    if index is None:
        return float(np.mean([auc(labels, row) for row in scores]))
    return float(np.mean([auc(labels[index], row[index]) for row in scores]))


def seed_aucs(labels: np.ndarray, scores: np.ndarray, resamples: list[np.ndarray]) -> np.ndarray:
    """[resample, seed] AUCs of `scores` ([seeds, n] or [n]) on each test resample."""
    scores = np.atleast_2d(scores)
    return np.array([[auc(labels[i], row[i]) for row in scores] for i in resamples])


def seed_means(aucs: np.ndarray, resample_seeds: bool, rng: np.random.Generator) -> np.ndarray:
    """Seed-mean AUC per resample; with `resample_seeds`, over seeds drawn with replacement
    (a two-level bootstrap: the CI then covers training variance, not only test sampling)."""
    if not resample_seeds or aucs.shape[1] == 1:
        return aucs.mean(axis=1)
    drawn = rng.integers(0, aucs.shape[1], aucs.shape)
    return np.take_along_axis(aucs, drawn, axis=1).mean(axis=1)


def estimate_from_aucs(
    observed: float,
    aucs: np.ndarray,
    ci: float = 0.95,
    seed: int = 0,
    resample_seeds: bool = False,
) -> Estimate:
    """CI of a seed-mean AUC from its [resample, seed] matrix (`seed_aucs`)."""
    draws = seed_means(aucs, resample_seeds, np.random.default_rng([seed, 1]))
    return Estimate(observed, *percentile_ci(draws, ci))


def difference_from_aucs(
    observed: float,
    aucs_arm: np.ndarray,
    aucs_reference: np.ndarray,
    ci: float = 0.95,
    seed: int = 0,
    resample_seeds: bool = False,
) -> Estimate:
    """CI and two-sided p of a seed-mean AUC difference from both arms' [resample, seed]
    matrices on the same test resamples. With `resample_seeds` each arm's seeds are drawn with
    replacement, independently (the two arms' trainings are different runs)."""
    rng = np.random.default_rng([seed, 2])
    draws = seed_means(aucs_arm, resample_seeds, rng) - seed_means(
        aucs_reference, resample_seeds, rng
    )
    draws = draws[np.isfinite(draws)]
    p_value = min(1.0, 2 * min((draws <= 0).mean(), (draws >= 0).mean()))
    p_value = max(p_value, 1 / max(len(draws), 1))
    return Estimate(observed, *percentile_ci(draws, ci), p_value=float(p_value))


def auc_ci(
    labels: np.ndarray,
    scores: np.ndarray,
    n_resamples: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
    groups: np.ndarray | None = None,
    resample_seeds: bool = False,
) -> Estimate:
    """Seed-mean AUC with a percentile bootstrap CI over test images (or cases), and over
    seeds too with `resample_seeds`."""
    labels = np.asarray(labels)
    aucs = seed_aucs(labels, scores, bootstrap_indices(labels, n_resamples, seed, groups))
    return estimate_from_aucs(mean_auc(labels, scores), aucs, ci, seed, resample_seeds)


def paired_difference(
    labels: np.ndarray,
    scores_arm: np.ndarray,
    scores_reference: np.ndarray,
    n_resamples: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
    groups: np.ndarray | None = None,
    resample_seeds: bool = False,
) -> Estimate:
    """Seed-mean AUC(arm) − AUC(reference) on the same test resamples; two-sided bootstrap p."""
    labels = np.asarray(labels)
    resamples = bootstrap_indices(labels, n_resamples, seed, groups)
    observed = mean_auc(labels, scores_arm) - mean_auc(labels, scores_reference)
    return difference_from_aucs(
        observed,
        seed_aucs(labels, scores_arm, resamples),
        seed_aucs(labels, scores_reference, resamples),
        ci,
        seed,
        resample_seeds,
    )


def choose_threshold(
    labels: np.ndarray, scores: np.ndarray, method: str = "youden", target_sensitivity: float = 0.9
) -> float:
    """Operating point from validation scores: Youden's J, or the highest threshold whose
    sensitivity reaches the target (best specificity under that constraint)."""
    fpr, tpr, thresholds = roc_curve(labels, scores)
    finite = np.isfinite(thresholds)
    fpr, tpr, thresholds = fpr[finite], tpr[finite], thresholds[finite]
    if method == "youden":
        return float(thresholds[int(np.argmax(tpr - fpr))])
    if method == "sensitivity":
        reaching = np.flatnonzero(tpr >= target_sensitivity)
        return float(thresholds[reaching[0]] if len(reaching) else thresholds[-1])
    raise ValueError(f"unknown threshold method {method!r} (youden or sensitivity)")


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else float("nan")


def binary_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """Confusion matrix and the usual rates; predicted positive when score >= threshold."""
    labels = np.asarray(labels).astype(bool)
    predicted = np.asarray(scores) >= threshold
    tp = int((predicted & labels).sum())
    fp = int((predicted & ~labels).sum())
    tn = int((~predicted & ~labels).sum())
    fn = int((~predicted & labels).sum())
    return {
        "threshold": float(threshold),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "ppv": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "accuracy": _ratio(tp + tn, len(labels)),
    }
