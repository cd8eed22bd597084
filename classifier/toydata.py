"""Tiny classifier layouts with a learnable signal, for tests and benchmarks without real data.

Class 1 frames carry a brighter, rougher blob than class 0; each image is its own case.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from metadata.atomic import save_png, write_json


def toy_image(rng: np.random.Generator, label: int, size: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size] / size
    cy, cx = rng.uniform(0.35, 0.65, 2)
    radius = rng.uniform(0.12, 0.22)
    blob = ((yy - cy) ** 2 + (xx - cx) ** 2) < radius**2
    image = 0.35 + 0.08 * rng.standard_normal((size, size))
    image[blob] += (0.35 if label else 0.12) + (0.15 if label else 0.03) * rng.standard_normal(
        blob.sum()
    )
    gray = (np.clip(image, 0, 1) * 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=2)


def build_toy_layout(
    croot: str | Path,
    subtype: str = "FTC",
    counts: dict[str, tuple[int, int]] | None = None,
    size: int = 32,
    seed: int = 0,
    prefix: str = "img",
) -> Path:
    """CROOT/<subtype>/{split}/{0,1}/*.png + splits.json; counts[split] = (n_class0, n_class1)."""
    counts = counts or {"train": (24, 8), "valid": (8, 4), "test": (8, 4)}
    rng = np.random.default_rng(seed)
    croot = Path(croot)
    entries = []
    for split, per_class in counts.items():
        for label, count in enumerate(per_class):
            for index in range(count):
                stem = f"{prefix}_{split}_{label}_{index:03d}"
                save_png(
                    croot / subtype / split / str(label) / f"{stem}.png",
                    toy_image(rng, label, size),
                )
                entries.append({"file_name": f"{stem}.png", "split": split, "case_id": stem})
    write_json(croot / "splits.json", {subtype: entries})
    return croot


def build_toy_manifest(
    folder: str | Path,
    subtype: str,
    counts: tuple[int, int],
    size: int = 32,
    seed: int = 1,
    kept_fraction: float | None = None,
) -> Path:
    """A stand-in synthetic manifest (images + manifest.jsonl), optionally with `kept` flags."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    rows = []
    for label, count in enumerate(counts):
        for index in range(count):
            name = f"images/syn_{label}_{index:03d}.png"
            save_png(folder / name, toy_image(rng, label, size))
            row = {
                "id": f"syn_{label}_{index:03d}",
                "file_name": name,
                "label": subtype if label else "benign",
            }
            if kept_fraction is not None:
                row["kept"] = bool(rng.random() < kept_fraction)
            rows.append(row)
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder / "manifest.jsonl"
