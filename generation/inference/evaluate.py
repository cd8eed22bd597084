"""Score a generated folder: attribute agreement (probe on real images) and memorization.

    python -m generation.inference.cli evaluate --gen runs/gen_ftc --dataset data/phantom

Real images are split by case exactly as generation drew on them: the probe is fit on train,
its ceiling measured on valid+test; the memorization index holds the train images and its
near-copy threshold is calibrated on valid+test (different patients).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from generation.inference.agreement import PROBED, AttributeProbe, agreement, nodule_features
from generation.inference.attributes import record_value
from generation.inference.masks import load_mask
from generation.inference.memorization import (
    TrainIndex,
    calibrate_threshold,
    check_images,
    load_grey,
)
from generation.inference.sources import labelled_splits
from metadata.atomic import write_json
from metadata.records import MetadataError, resolve
from metadata.splits import SplitConfig
from metadata.vocabulary import measure_mask


def real_splits(dataset, splits_file=None, split: SplitConfig | None = None, size: int = 0):
    """(meta_file, train records, held-out records) of the labelled real images with a lesion
    (one still there at `size` px), split as generation split them (`sources.labelled_splits`:
    the splits file or an explicit split)."""
    meta_file, records, splits, _ = labelled_splits(dataset, splits_file, split)
    records = [r for r in records if not r.attributes.get("lesion_free")]
    if size:
        records = [r for r in records if load_mask(resolve(meta_file, r.condition_FG), size).any()]
    train = [r for r in records if splits.get(r.file_name) == "train"]
    held = [r for r in records if splits.get(r.file_name) in ("valid", "test")]
    if not train or not held:
        raise MetadataError(meta_file, "need real train and held-out images to evaluate")
    return meta_file, train, held


def record_features(meta_file: Path, records, size: int) -> np.ndarray:
    return np.stack(
        [
            nodule_features(
                load_grey(resolve(meta_file, r.file_name), size),
                load_mask(resolve(meta_file, r.condition_FG), size),
            )
            for r in records
        ]
    )


def fit_probe(meta_file: Path, train, held, size: int) -> AttributeProbe:
    values = {n: [record_value(r, n) for r in train] for n in PROBED}
    test_values = {n: [record_value(r, n) for r in held] for n in PROBED}
    return AttributeProbe().fit(
        record_features(meta_file, train, size),
        values,
        record_features(meta_file, held, size),
        test_values,
    )


def read_rows(gen_dir: Path) -> list[dict]:
    manifest = gen_dir / "manifest.jsonl"
    if not manifest.is_file():
        raise MetadataError(manifest, "synthetic manifest not found")
    return [json.loads(line) for line in manifest.read_text("utf-8").splitlines() if line.strip()]


def generated_features(
    gen: Path, rows: list[dict], size: int, masks: list[np.ndarray] | None = None
) -> np.ndarray:
    """The probes' features of each generated image, read inside the FG mask it was given
    (`masks`: those masks already loaded at `size`)."""
    if masks is None:
        masks = [load_mask(Path(gen, r["condition_FG"]), size) for r in rows]
    return np.stack(
        [
            nodule_features(load_grey(gen / r["file_name"], size), mask)
            for r, mask in zip(rows, masks, strict=True)
        ]
    )


def evaluate_generation(
    gen_dir: str | os.PathLike,
    dataset: str | os.PathLike,
    splits_file: str | None = None,
    out_file: str | os.PathLike | None = None,
    probe: AttributeProbe | None = None,
    split: SplitConfig | None = None,
) -> dict:
    """Agreement per attribute and memorization summary of GEN (written to `out_file`)."""
    gen = Path(gen_dir)
    rows = read_rows(gen)
    size = int(rows[0].get("resolution") or 128)
    meta_file, train, held = real_splits(dataset, splits_file, split, size)
    probe = probe or fit_probe(meta_file, train, held, size)
    images = [gen / r["file_name"] for r in rows]
    masks = [load_mask(Path(gen, r["condition_FG"]), size) for r in rows]
    features = generated_features(gen, rows, size, masks)
    prompted = {n: [r["attributes"].get(n) for r in rows] for n in PROBED}
    mask_shape = [
        measure_mask(m).shape == r["attributes"].get("shape")
        for m, r in zip(masks, rows, strict=True)
        if r["attributes"].get("shape")
    ]
    index = TrainIndex(
        [resolve(meta_file, r.file_name) for r in train], size, cases=[r.case_id for r in train]
    )
    calibration = calibrate_threshold(index, [resolve(meta_file, r.file_name) for r in held])
    per_image, memorization = check_images(
        index,
        images,
        calibration["threshold"],
        [r.get("reference") for r in rows],
        [r.get("source_cases") or [r.get("case_id")] for r in rows],
    )
    report = {
        "gen": str(gen),
        "n_images": len(rows),
        "probe_held_out": probe.held_out_accuracy,
        "agreement": agreement(probe, features, prompted),
        "mask_shape_agreement": float(np.mean(mask_shape)) if mask_shape else None,
        "memorization": {**memorization, "calibration": calibration},
    }
    if out_file is not None:
        write_json(out_file, {**report, "per_image_memorization": per_image})
    return report
