"""How far a synthetic set is from real, in units of how far real is from real.

Features: the domain CLIP's image tower (trained on the train cases by the clip stage), so
nothing is downloaded and the space is ultrasound, not ImageNet. For one class, three sets:
synthetic, real train, real held-out (valid + test cases; used for measurement only, never for
training or selection). Reported, each against real train and, separately, against held-out:
- Fréchet distance and KID (torchmetrics' FrechetInceptionDistance / KernelInceptionDistance,
  given our extractor), with real train vs held-out as the reference value;
- improved precision and recall (Kynkäänniemi et al. 2019: k-NN balls around each real, resp.
  synthetic, feature; precision = share of synthetic inside the real manifold, recall = share of
  real inside the synthetic one);
- memorization (Akbar et al., Dar et al.): a synthetic image nearer to a train image than any
  held-out real image is to train is flagged; the flagged fraction.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

NEIGHBOURS = 3  # k of the k-NN manifold (the paper's default)
KID_SUBSET = 50


class FeatureTable(torch.nn.Module):
    """Features already computed, handed to torchmetrics as its "extractor": the metric calls
    the module on its input, which here is the feature matrix itself (computed once per set)."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features.double()


def frechet_distance(real: torch.Tensor, other: torch.Tensor) -> float:
    """FD between two (N, D) feature sets (torchmetrics, with our features)."""
    metric = FrechetInceptionDistance(feature=FeatureTable(), input_img_size=(real.shape[1],))
    metric.update(real, real=True)
    metric.update(other, real=False)
    return float(metric.compute())


def kernel_distance(real: torch.Tensor, other: torch.Tensor, seed: int = 0) -> tuple[float, float]:
    """KID (mean, std over subsets) between two feature sets (torchmetrics)."""
    subset = max(2, min(KID_SUBSET, len(real), len(other)))
    with warnings.catch_warnings():  # "will save all extracted features": ours are small
        warnings.simplefilter("ignore", UserWarning)
        metric = KernelInceptionDistance(feature=FeatureTable(), subset_size=subset)
    metric.update(real, real=True)
    metric.update(other, real=False)
    with torch.random.fork_rng():  # seeded subsets, the caller's random state untouched
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


BLOCK = 2048  # rows per distance block: memory stays O(BLOCK x set size) at any scale


def blocked_min_distance(points: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """Each point's distance to its nearest row of `others`, a block of points at a time."""
    return torch.cat(
        [
            torch.cdist(points[i : i + BLOCK], others).min(dim=1).values
            for i in range(0, len(points), BLOCK)
        ]
    )


def knn_radii(features: torch.Tensor, k: int) -> torch.Tensor:
    """Distance of each feature to its k-th nearest other feature of the same set."""
    k = min(k, len(features) - 1)
    return torch.cat(
        [  # index 0 of each row's k+1 smallest is the point itself
            torch.cdist(features[i : i + BLOCK], features).topk(k + 1, largest=False).values[:, k]
            for i in range(0, len(features), BLOCK)
        ]
    )


def coverage(points: torch.Tensor, manifold: torch.Tensor, k: int) -> float:
    """Share of `points` inside the union of k-NN balls around `manifold`'s features."""
    radii = knn_radii(manifold, k)
    inside = [
        (torch.cdist(points[i : i + BLOCK], manifold) <= radii[None, :]).any(dim=1)
        for i in range(0, len(points), BLOCK)
    ]
    return float(torch.cat(inside).float().mean())


def precision_recall(real: torch.Tensor, synthetic: torch.Tensor, k: int = NEIGHBOURS):
    """Improved precision and recall (Kynkäänniemi et al. 2019)."""
    return coverage(synthetic, real, k), coverage(real, synthetic, k)


def memorized_fraction(
    train: torch.Tensor, held_out: torch.Tensor, synthetic: torch.Tensor
) -> tuple[float, float]:
    """(fraction of synthetic images nearer to a train image than any held-out real image is,
    that threshold)."""
    threshold = float(blocked_min_distance(held_out, train).min())
    nearest = blocked_min_distance(synthetic, train)
    return float((nearest < threshold).float().mean()), threshold


@dataclass
class SetQuality:
    """One synthetic set against one real reference set."""

    frechet: float
    kid: float
    kid_std: float
    precision: float
    recall: float

    @classmethod
    def measure(cls, real: torch.Tensor, synthetic: torch.Tensor) -> SetQuality:
        kid, kid_std = kernel_distance(real, synthetic)
        precision, recall = precision_recall(real, synthetic)
        return cls(frechet_distance(real, synthetic), kid, kid_std, precision, recall)

    def to_json(self) -> dict:
        return {key: round(value, 6) for key, value in self.__dict__.items()}


def quality_report(
    train: torch.Tensor, held_out: torch.Tensor, synthetic: dict[str, torch.Tensor]
) -> dict:
    """Every synthetic set (by mode) against train and held-out; real-vs-real as reference."""
    if min(len(train), len(held_out)) < 2:
        raise ValueError("quality metrics need at least 2 real train and 2 held-out images")
    report: dict = {
        "n_train": len(train),
        "n_held_out": len(held_out),
        "real_vs_real": SetQuality.measure(train, held_out).to_json(),
        "modes": {},
    }
    for mode, features in synthetic.items():
        if len(features) < 2:
            continue
        flagged, threshold = memorized_fraction(train, held_out, features)
        report["modes"][mode] = {
            "n": len(features),
            "vs_train": SetQuality.measure(train, features).to_json(),
            "vs_held_out": SetQuality.measure(held_out, features).to_json(),
            "memorized_fraction": round(flagged, 4),
            "memorization_threshold": round(threshold, 6),
        }
    return report
