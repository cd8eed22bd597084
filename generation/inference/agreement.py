"""Attribute agreement: does a generated image show the attributes its prompt asked for?

A probe per attribute is trained on real phantom images of the train split (features computed
around the nodule mask, which is known for generated images: it is their FG condition) and
checked on real held-out images (its accuracy there is the ceiling any generator can reach).
A generated image agrees on an attribute when the probe reads the prompted value. Controls:
the same probe on the same images with the prompted values shuffled across images (what a
generator ignoring the prompt would score), and bootstrap 95% intervals. The shape probe sees
image-only features (an outline thresholded from the image in a fixed square around the mask
centre), so it measures the outline the generator drew; shape read off the FG mask itself
(`measure_mask`) is reported apart, as a check of the mask bank.

Features (all relative to the tissue ring around the nodule, so gain and depth cancel):
inside-minus-ring brightness quantiles, the bright-speck fraction (microcalcifications), the
posterior shadow below the nodule (macrocalcifications), inside texture, a coarse window of the
nodule's box, and the image-only outline features.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.stats import binomtest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

PROBED = ("echogenicity", "calcifications", "composition", "margins", "shape", "halo")
WINDOW = 12


def to_grey(image: np.ndarray) -> np.ndarray:
    array = np.asarray(image, dtype=np.float64)
    return array[..., :3].mean(axis=-1) if array.ndim == 3 else array


# Columns of `nodule_features` (inside minus the tissue ring, in units of the ring's spread).
INSIDE_COLUMNS = {"inside_median": 2, "inside_q99": 5, "shadow_below": 8}


def inside_summary(features: np.ndarray) -> dict[str, float]:
    """Mean inside brightness (median, 99th percentile) and shadow below, over a set's rows."""
    return {name: round(float(features[:, i].mean()), 3) for name, i in INSIDE_COLUMNS.items()}


def nodule_features(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Feature vector of one frame around its nodule mask (same size as the image)."""
    grey = to_grey(image)
    mask = np.asarray(mask) > 0
    if mask.ndim == 3:
        mask = mask.any(axis=-1)
    if mask.shape != grey.shape:
        raise ValueError(f"mask {mask.shape} and image {grey.shape} differ in size")
    size = grey.shape[0]
    width = max(2, round(0.06 * size))
    ring = ndimage.binary_dilation(mask, iterations=width) & ~ndimage.binary_dilation(mask)
    ring_values = grey[ring] if ring.any() else grey[~mask]
    base, spread = float(np.median(ring_values)), float(ring_values.std() + 1e-6)
    inside = grey[mask]
    quantiles = (np.percentile(inside, [10, 25, 50, 75, 90, 99]) - base) / spread
    specks = float((inside > base + 2.5 * spread).mean())
    dark = float((inside < base - 1.5 * spread).mean())
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    below = grey[rows[-1] + 1 : min(size, rows[-1] + 1 + width * 2), cols[0] : cols[-1] + 1]
    shadow = (float(below.mean()) - base) / spread if below.size else 0.0
    smooth = ndimage.gaussian_filter(grey, 1.0)
    texture = float(np.abs(grey - smooth)[mask].mean() / spread)
    window = nodule_window(smooth, mask, base, spread)
    mask_relative = np.concatenate(
        [quantiles, [specks, dark, shadow, texture, inside.std() / spread], window]
    )
    return np.concatenate([mask_relative, image_only_features(smooth, mask, base, inside)])


def image_only_features(
    smooth: np.ndarray, mask: np.ndarray, base: float, inside: np.ndarray
) -> np.ndarray:
    """Outline features read off the image alone, in a fixed square around the mask centre.

    Only the centre and the brightness reference come from the mask, so the outline the
    generator drew is measured, not the outline it was given.
    """
    size = smooth.shape[0]
    half = max(4, round(0.3 * size))
    centre = [round(c) for c in ndimage.center_of_mass(mask)]
    top, left = max(0, centre[0] - half), max(0, centre[1] - half)
    crop = smooth[top : centre[0] + half, left : centre[1] + half]
    level = float(np.median(inside))
    threshold = (base + level) / 2.0
    region = crop < threshold if level < base else crop > threshold
    region = ndimage.binary_opening(region, iterations=1)
    labels, _ = ndimage.label(region)
    local = (min(centre[0] - top, crop.shape[0] - 1), min(centre[1] - left, crop.shape[1] - 1))
    if labels[local]:
        component = labels == labels[local]
    else:
        component = np.zeros_like(region)
        component[local] = True
    rows = np.flatnonzero(component.any(axis=1))
    cols = np.flatnonzero(component.any(axis=0))
    aspect = (rows[-1] - rows[0] + 1) / (cols[-1] - cols[0] + 1)
    box = (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)
    spread = max(1e-6, abs(level - base))
    zoom = (WINDOW / crop.shape[0], WINDOW / crop.shape[1])
    window = ndimage.zoom((crop - base) / spread, zoom, order=1)[:WINDOW, :WINDOW].ravel()
    contrast = np.abs(crop - base)
    rows_on = (contrast.mean(axis=1) > contrast.mean()).sum()
    cols_on = (contrast.mean(axis=0) > contrast.mean()).sum()
    extent = np.log(rows_on + 1) - np.log(cols_on + 1)
    return np.concatenate(
        [[np.log(aspect), component.sum() / box, component.sum() / crop.size, extent], window]
    )


IMAGE_ONLY = slice(-(4 + WINDOW * WINDOW), None)
# Attributes read from the image-only features (the mask would give the answer away).
IMAGE_ONLY_ATTRIBUTES = ("shape",)


def nodule_window(smooth: np.ndarray, mask: np.ndarray, base: float, spread: float) -> np.ndarray:
    """The nodule's bounding box (plus a margin) resampled to WINDOW x WINDOW, normalised."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    pad_r, pad_c = max(2, (rows[-1] - rows[0]) // 4), max(2, (cols[-1] - cols[0]) // 4)
    top, bottom = max(0, rows[0] - pad_r), min(smooth.shape[0], rows[-1] + pad_r + 1)
    left, right = max(0, cols[0] - pad_c), min(smooth.shape[1], cols[-1] + pad_c + 1)
    crop = (smooth[top:bottom, left:right] - base) / spread
    zoom = (WINDOW / crop.shape[0], WINDOW / crop.shape[1])
    return ndimage.zoom(crop, zoom, order=1)[:WINDOW, :WINDOW].ravel()


def columns_for(name: str, features: np.ndarray) -> np.ndarray:
    """The feature columns a probe of `name` may use."""
    return features[:, IMAGE_ONLY] if name in IMAGE_ONLY_ATTRIBUTES else features


@dataclass
class AttributeProbe:
    """One classifier per attribute, fit on real images and their recorded attributes."""

    models: dict = field(default_factory=dict)
    held_out_accuracy: dict = field(default_factory=dict)

    def fit(
        self,
        features: np.ndarray,
        values: dict[str, list[str | None]],
        test_features: np.ndarray,
        test_values: dict[str, list[str | None]],
    ) -> AttributeProbe:
        for name in PROBED:
            known = [i for i, v in enumerate(values.get(name, [])) if v is not None]
            labels = [values[name][i] for i in known]
            if len(set(labels)) < 2:
                continue
            model = make_pipeline(StandardScaler(), LogisticRegression(C=0.3, max_iter=2000))
            model.fit(columns_for(name, features)[known], labels)
            self.models[name] = model
            seen = [
                i
                for i, v in enumerate(test_values.get(name, []))
                if v is not None and v in model.classes_
            ]
            if seen:
                predicted = model.predict(columns_for(name, test_features)[seen])
                truth = np.array([test_values[name][i] for i in seen])
                self.held_out_accuracy[name] = {
                    "accuracy": float((predicted == truth).mean()),
                    "n": len(seen),
                    "majority_baseline": majority_share(truth),
                }
        return self

    def predict(self, name: str, features: np.ndarray) -> np.ndarray:
        return self.models[name].predict(columns_for(name, features))


def majority_share(values: np.ndarray) -> float:
    _, counts = np.unique(values, return_counts=True)
    return float(counts.max() / counts.sum())


def bootstrap_interval(hits: np.ndarray, rng: np.random.Generator, rounds: int = 2000) -> list:
    if hits.size == 0:
        return [float("nan"), float("nan")]
    draws = rng.integers(0, hits.size, size=(rounds, hits.size))
    means = hits[draws].mean(axis=1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def agreement(
    probe: AttributeProbe,
    features: np.ndarray,
    prompted: dict[str, list[str | None]],
    seed: int = 0,
) -> dict[str, dict]:
    """Per attribute: agreement with the prompt (95% CI) and the shuffled-prompt control."""
    rng = np.random.default_rng(seed)
    report = {}
    for name, model in probe.models.items():
        keep = [
            i for i, v in enumerate(prompted.get(name, [])) if v is not None and v in model.classes_
        ]
        if not keep:
            continue
        asked = np.array([prompted[name][i] for i in keep])
        read = probe.predict(name, features[keep])
        hits = (read == asked).astype(float)
        shuffled = np.mean([(read == rng.permutation(asked)).mean() for _ in range(200)])
        report[name] = {
            "agreement": float(hits.mean()),
            "ci95": bootstrap_interval(hits, rng),
            "shuffled_prompt_control": float(shuffled),
            "n": len(keep),
            "probe_held_out_accuracy": probe.held_out_accuracy.get(name, {}).get("accuracy"),
        }
    return report


def word_control(read_by_job: dict[str, dict[str, str]]) -> dict:
    """Does the word steer the image? Counterfactual versions of the same jobs.

    `read_by_job[job][asked]` is what the probe read off the version of `job` whose prompt
    asked for the value `asked`; the versions of a job differ only in that word (same seed,
    other words, background). Each job scores its hits, the
    versions read as asked. A generator that ignores the word draws one image k times: the
    probe reads it as one of the k values, so exactly 1 hit per job, balanced agreement 1/k;
    one that follows the word scores k. Returns balanced agreement [bootstrap 95% CI over jobs],
    its chance level, jobs above / below one hit, and the exact sign test on those.
    """
    jobs = sorted(read_by_job)
    sizes = {len(read_by_job[job]) for job in jobs}
    hits = [sum(asked == read for asked, read in read_by_job[job].items()) for job in jobs]
    if not jobs:
        raise ValueError("word_control needs at least one job with its versions")
    if len(sizes) != 1 or min(sizes) < 2:
        raise ValueError(f"every job needs the same number (>= 2) of versions, got {sizes}")
    k = sizes.pop()
    hits_array = np.asarray(hits, dtype=float)
    above, below = int((hits_array > 1).sum()), int((hits_array < 1).sum())
    rng = np.random.default_rng(0)
    return {
        "balanced_agreement": float(hits_array.mean() / k),
        "ci95": [value / k for value in bootstrap_interval(hits_array, rng)],
        "chance": 1.0 / k,
        "versions": k,
        "jobs": len(jobs),
        "jobs_above_one_hit": above,
        "jobs_below_one_hit": below,
        "p_sign": float(binomtest(above, above + below).pvalue) if above + below else 1.0,
    }
