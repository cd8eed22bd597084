"""Memorization check: each synthetic image's nearest real training image, and near-copy flags.

Search space: the frame downsampled to 32x32 and standardised (cosine similarity = correlation
of coarse layout), which finds candidates fast; the verdict uses pixel SSIM at full size against
the `top_k` candidates. The near-copy threshold is calibrated on real data, not guessed: real
held-out (valid/test) images are different patients, so the `quantile` of their nearest-train
SSIM is what "new but similar" looks like; a synthetic image above it is flagged.

Generated images are conditioned on real train material (a background map, a mask, a
reference), so resembling that very image is by design: each flag also says whether the nearest
image is one of the image's own condition sources (`explained`); flags that are not are the
memorization that matters. SSIM above `DUPLICATE_SSIM` is reported as a pixel near-duplicate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

EMBED_SIZE = 32
SSIM_SIGMA = 1.5
DUPLICATE_SSIM = 0.9


def load_grey(path: str | Path, size: int) -> np.ndarray:
    with Image.open(path) as image:
        grey = image.convert("L")
    if grey.size != (size, size):
        scale = size / min(grey.size)
        resized = (max(size, round(grey.width * scale)), max(size, round(grey.height * scale)))
        grey = grey.resize(resized, Image.Resampling.BILINEAR)
        left, top = (grey.width - size) // 2, (grey.height - size) // 2
        grey = grey.crop((left, top, left + size, top + size))
    return np.asarray(grey, dtype=np.float64)


def embed(grey: np.ndarray) -> np.ndarray:
    small = np.asarray(
        Image.fromarray(grey.astype(np.float32)).resize(
            (EMBED_SIZE, EMBED_SIZE), Image.Resampling.BILINEAR
        ),
        dtype=np.float64,
    ).ravel()
    small = small - small.mean()
    return small / (np.linalg.norm(small) + 1e-9)


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """Mean structural similarity (Gaussian window, Wang et al. 2004 constants)."""
    return float(ssim_many(a, b[None], data_range)[0])


def ssim_many(grey: np.ndarray, stack: np.ndarray, data_range: float = 255.0) -> np.ndarray:
    """SSIM of `grey` (H, W) with each image of `stack` (K, H, W), in one filtering call.

    The window is not applied across the stack (sigma 0 on that axis), so each value is the
    pairwise SSIM exactly."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    sigma = (0.0, SSIM_SIGMA, SSIM_SIGMA)
    a = np.broadcast_to(np.asarray(grey, dtype=np.float64), stack.shape)
    b = np.asarray(stack, dtype=np.float64)
    mu_a, mu_b = ndimage.gaussian_filter(a, sigma), ndimage.gaussian_filter(b, sigma)
    var_a = ndimage.gaussian_filter(a * a, sigma) - mu_a**2
    var_b = ndimage.gaussian_filter(b * b, sigma) - mu_b**2
    cov = ndimage.gaussian_filter(a * b, sigma) - mu_a * mu_b
    numerator = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    denominator = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return (numerator / denominator).mean(axis=(1, 2))


@dataclass
class Neighbour:
    index: int
    cosine: float
    ssim: float


class TrainIndex:
    """Real training images, embedded once, searched by cosine then verified by SSIM.

    Frames are kept as uint8 (what they are on disk): 40k frames at 128 px take 0.66 GB, not
    the 5 GB of float64. Searches run a block of queries at a time as one matrix product and a
    partial sort (`nearest_many`), so the cost is a blocked product, not a Python loop over
    train frames."""

    def __init__(
        self, paths: list[Path], size: int, top_k: int = 5, cases: list[str] | None = None
    ):
        if not paths:
            raise ValueError("memorization check needs at least one real training image")
        self.paths = list(paths)
        self.cases = list(cases) if cases is not None else [str(p) for p in self.paths]
        self.size = size
        self.top_k = top_k
        self.images = np.empty((len(self.paths), size, size), dtype=np.uint8)
        self.embeddings = np.empty((len(self.paths), EMBED_SIZE * EMBED_SIZE))
        for row, path in enumerate(self.paths):
            grey = load_grey(path, size)
            self.images[row] = grey  # integral values 0-255: exact
            self.embeddings[row] = embed(grey)

    def candidates(self, cosines: np.ndarray) -> np.ndarray:
        """(Q, top_k) train rows of highest cosine per row of `cosines`, best first."""
        k = min(self.top_k, cosines.shape[1])
        part = np.argpartition(-cosines, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(cosines, part, axis=1), axis=1, kind="stable")
        return np.take_along_axis(part, order, axis=1)

    def verdict(self, grey: np.ndarray, rows: np.ndarray, cosines: np.ndarray) -> Neighbour:
        scores = ssim_many(grey, self.images[rows])
        best = int(np.argmax(scores))
        return Neighbour(int(rows[best]), float(cosines[rows[best]]), float(scores[best]))

    def nearest(self, grey: np.ndarray, exclude: set[int] | None = None) -> Neighbour:
        cosines = self.embeddings @ embed(grey)
        if exclude:
            cosines[list(exclude)] = -np.inf
        rows = self.candidates(cosines[None])[0]
        return self.verdict(grey, rows, cosines)

    def nearest_many(self, greys: list[np.ndarray]) -> list[Neighbour]:
        """`nearest` for a block of images: one matrix product for the whole block."""
        if not greys:
            return []
        cosines = np.stack([embed(g) for g in greys]) @ self.embeddings.T
        rows = self.candidates(cosines)
        return [self.verdict(g, r, c) for g, r, c in zip(greys, rows, cosines, strict=True)]


def blocks(items: list, size: int = 256):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def calibrate_threshold(
    index: TrainIndex, held_out: list[Path], quantile: float = 0.99
) -> dict[str, float]:
    """SSIM of real held-out images to their nearest train image; the threshold is a quantile."""
    values = np.array(
        [
            near.ssim
            for block in blocks(held_out)
            for near in index.nearest_many([load_grey(p, index.size) for p in block])
        ]
    )
    return {
        "threshold": float(np.quantile(values, quantile)),
        "quantile": quantile,
        "held_out_n": len(values),
        "held_out_median": float(np.median(values)),
        "held_out_max": float(values.max()),
    }


def check_images(
    index: TrainIndex,
    synthetic: list[Path],
    threshold: float,
    references: list[str | None],
    source_cases: list[list[str]] | None = None,
) -> tuple[list[dict], dict]:
    """Per-image nearest real image and flag; summary with the fractions flagged."""
    rows = []
    source_cases = source_cases or [[] for _ in synthetic]
    items = list(zip(synthetic, references, source_cases, strict=True))
    for block in blocks(items):
        greys = [load_grey(path, index.size) for path, _, _ in block]
        for (path, reference, sources), grey, near in zip(
            block, greys, index.nearest_many(greys), strict=True
        ):
            row = {
                "image": str(path),
                "nearest": str(index.paths[near.index]),
                "cosine": round(near.cosine, 4),
                "ssim": round(near.ssim, 4),
                "near_copy": near.ssim > threshold,
                "explained": index.cases[near.index] in sources,
            }
            if reference:
                row["ssim_to_reference"] = round(ssim(grey, load_grey(reference, index.size)), 4)
            rows.append(row)
    values = np.array([r["ssim"] for r in rows])
    flags = [r["near_copy"] for r in rows]
    unexplained = [r["near_copy"] and not r["explained"] for r in rows]
    summary = {
        "n": len(rows),
        "threshold": threshold,
        "fraction_flagged": float(np.mean(flags)) if rows else 0.0,
        "fraction_flagged_unexplained": float(np.mean(unexplained)) if rows else 0.0,
        "fraction_nearest_is_own_source": float(np.mean([r["explained"] for r in rows]))
        if rows
        else 0.0,
        "fraction_duplicates": float(np.mean(values > DUPLICATE_SSIM)) if rows else 0.0,
        "ssim_median": float(np.median(values)) if rows else float("nan"),
        "ssim_max": float(values.max()) if rows else float("nan"),
    }
    to_reference = [r["ssim_to_reference"] for r in rows if "ssim_to_reference" in r]
    if to_reference:
        summary["ssim_to_reference_median"] = float(np.median(to_reference))
    return rows, summary
