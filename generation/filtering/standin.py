"""Stand-in synthetic sets until the generation stage exists, plus deliberate corruptions.

`dataset_as_manifest` writes a dataset folder (e.g. a phantom from another seed) in the
synthetic-manifest layout of ARCHITECTURE.md, so every filtering step runs on the real contract.
`add_corruptions` mixes in images MoSo should rank at the bottom: wrong-class images (an image
of one class labelled as another), pure noise, and exact duplicates. Each row carries
`corruption` (ground truth for the validation; "" for clean rows).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from generation.filtering.images import open_rgb
from generation.filtering.manifest import MANIFEST_FILE
from metadata.atomic import save_png, write_jsonl
from metadata.records import metadata_path, read_metadata, resolve


def provenance(row: dict) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    info.add_text("tiger:provenance", json.dumps({**row, "synthetic": True}))
    return info


def manifest_row(image_id: str, label: str, text_nd: str, text_bg: str, **extra) -> dict:
    return {
        "id": image_id,
        "file_name": f"images/{image_id}.png",
        "label": label,
        "mode": "standin",
        "prompt": text_nd,
        "text_nd": text_nd,
        "text_bg": text_bg,
        "attributes": extra.pop("attributes", {}),
        "seed": extra.pop("seed", None),
        "scheduler": None,
        "steps": None,
        "guidance_scale": None,
        "conditioning_scales": None,
        "condition_FG": extra.pop("condition_FG", None),
        "condition_BG": extra.pop("condition_BG", None),
        "reference": extra.pop("reference", None),
        "model_hash": "standin",
        "corruption": extra.pop("corruption", ""),
        **extra,
    }


def dataset_as_manifest(dataset: str | Path, out_dir: str | Path, labels: set[str] | None = None):
    """Copy a dataset folder's frames into GEN/images and write GEN/manifest.jsonl."""
    meta_file = metadata_path(dataset)
    out = Path(out_dir)
    rows = []
    for record in read_metadata(meta_file):
        if labels and record.label not in labels:
            continue
        image_id = f"standin_{record.stem}"
        row = manifest_row(
            image_id,
            record.label,
            record.text_nd,
            record.text_bg,
            attributes=record.attributes,
            reference=str(resolve(meta_file, record.file_name)),
        )
        save_png(out / row["file_name"], open_rgb(row["reference"]), pnginfo=provenance(row))
        rows.append(row)
    write_jsonl(out / MANIFEST_FILE, rows)
    return out / MANIFEST_FILE


def add_corruptions(
    gen_dir: str | Path,
    wrong_class: int,
    noise: int,
    duplicates: int,
    seed: int = 0,
    noise_labels: str = "sampled",
) -> list[dict]:
    """Add corrupted rows to GEN/manifest.jsonl (rewritten atomically); returns all rows.

    Wrong-class rows are clean images moved out of their own row and relabelled, so no copy of
    them stays in the pool (a copy would be caught by the filter's near-copy rule, not by the
    label); they keep the source's `true_label` and `true_attributes` (ground truth for the
    benchmark's ceilings). Noise rows are new; duplicate rows copy a clean image that stays in
    the pool.
    `noise_labels`: "sampled" gives each noise row a random clean row's label and prompt (so
    mostly the majority class, as a failed generation keeps its intended class), "uniform" a
    label drawn uniformly over the classes (no class holds most of the noise).
    """
    if noise_labels not in ("sampled", "uniform"):
        raise ValueError(f"noise_labels must be 'sampled' or 'uniform', got {noise_labels!r}")
    gen = Path(gen_dir)
    rows = [json.loads(line) for line in (gen / MANIFEST_FILE).read_text().splitlines() if line]
    clean = [row for row in rows if not row.get("corruption")]
    rng = np.random.default_rng(seed)
    labels = sorted({row["label"] for row in clean})
    if wrong_class and len(labels) < 2:
        raise ValueError("wrong-class corruption needs at least two labels")
    if wrong_class >= len(clean):
        raise ValueError(f"{wrong_class} wrong-class rows need more than {len(clean)} clean rows")
    added = []
    moved = [clean[int(i)] for i in rng.choice(len(clean), size=wrong_class, replace=False)]
    for k, source in enumerate(moved):
        other = [row for row in clean if row["label"] != source["label"]]
        target = other[int(rng.integers(len(other)))]
        row = manifest_row(
            f"wrongclass_{k:04d}",
            target["label"],
            target["text_nd"],
            target["text_bg"],
            corruption="wrong_class",
            reference=source["id"],
        )
        row["true_label"] = source["label"]
        row["true_attributes"] = source.get("attributes", {})
        shutil.copyfile(gen / source["file_name"], gen / row["file_name"])
        added.append(row)
    moved_ids = {row["id"] for row in moved}
    rows = [row for row in rows if row["id"] not in moved_ids]
    clean = [row for row in clean if row["id"] not in moved_ids]
    size = open_rgb(gen / clean[0]["file_name"]).size
    for k in range(noise):
        pool = clean
        if noise_labels == "uniform":
            label = labels[int(rng.integers(len(labels)))]
            pool = [row for row in clean if row["label"] == label] or clean
        target = pool[int(rng.integers(len(pool)))]
        row = manifest_row(
            f"noise_{k:04d}",
            target["label"],
            target["text_nd"],
            target["text_bg"],
            corruption="noise",
        )
        pixels = rng.integers(0, 256, size=(size[1], size[0]), dtype=np.uint8)
        save_png(gen / row["file_name"], Image.fromarray(pixels).convert("RGB"), provenance(row))
        added.append(row)
    for k in range(duplicates):
        source = clean[int(rng.integers(len(clean)))]
        row = {
            **source,
            "id": f"duplicate_{k:04d}",
            "file_name": f"images/duplicate_{k:04d}.png",
            "corruption": "duplicate",
            "reference": source["id"],
        }
        shutil.copyfile(gen / source["file_name"], gen / row["file_name"])
        added.append(row)
    write_jsonl(gen / MANIFEST_FILE, rows + added)
    for source in moved:  # only once the manifest no longer names them
        (gen / source["file_name"]).unlink()
    return rows + added
