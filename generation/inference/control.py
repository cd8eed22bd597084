"""Foreground/background control of a generated folder: does the image follow its conditions?

    python -m generation.inference.cli control --gen runs/gen_ftc --dataset data/phantom

Foreground: a small U-Net nodule segmenter is fit on real *train* images and masks (the split
generation drew on), finds the nodule in every generated image, and is scored by IoU against
the image's own `condition_FG`. Controls: the same predictions scored against another image's
`condition_FG` (a derangement: what a generator ignoring the mask scores), and the segmenter's
IoU on real held-out images against their true masks (the ceiling: a generated image cannot
score higher than the measuring instrument does on real data).

Background: the grey-level mean outside the nodule (`metadata.background.measure_background`,
the very measurement `text_bg` was written from) against the mean the image was asked for (the
first number of `text_bg`, or when `text_bg` carries no number, the same measurement on the
`condition_BG` map). Reported as Pearson r (95% CI) and mean absolute error in grey levels.

The segmenter is a CNN because a pixel-wise gradient-boosting segmenter reached only 0.31 IoU
on real held-out phantom frames against ~0.56 for this one (benchmarks/fine_control_quality.py).
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from generation.inference.evaluate import read_rows
from generation.inference.masks import load_mask
from generation.inference.memorization import load_grey
from generation.inference.segmenter import (  # noqa: F401 (names other modules import here)
    ControlConfig,
    NoduleSegmenter,
    TinyUNet,
    as_grey_tensor,
    conv_block,
    fitted_segmenter,
    largest_component,
)
from generation.inference.sources import labelled_splits
from metadata.atomic import write_json
from metadata.background import measure_background
from metadata.records import MetadataError, MetadataRecord, resolve
from metadata.splits import SplitConfig

BOOTSTRAP_ROUNDS = 2000
LEADING_NUMBER = re.compile(r"^\s*([-+]?\d+(?:\.\d+)?)")


def iou(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union; two empty masks agree perfectly."""
    predicted, truth = predicted.astype(bool), truth.astype(bool)
    union = np.logical_or(predicted, truth).sum()
    return float(np.logical_and(predicted, truth).sum() / union) if union else 1.0


def summary(values: list[float] | np.ndarray, seed: int = 0) -> dict:
    """{mean, ci95 (percentile bootstrap), n}; mean and interval are None when n is 0."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        return {"mean": None, "ci95": None, "n": 0}
    draws = np.random.default_rng(seed).integers(0, array.size, (BOOTSTRAP_ROUNDS, array.size))
    means = array[draws].mean(axis=1)
    interval = [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]
    return {"mean": float(array.mean()), "ci95": interval, "n": int(array.size)}


def derangement(n: int, seed: int) -> np.ndarray:
    """A random permutation with no fixed point, so no image keeps its own mask."""
    order = np.random.default_rng(seed).permutation(n)
    target = np.empty(n, dtype=np.int64)
    target[order] = np.roll(order, 1)
    return target


def real_train_valid(
    dataset: str | os.PathLike,
    splits_file: str | os.PathLike | None = None,
    split: SplitConfig | None = None,
) -> tuple[Path, list[MetadataRecord], list[MetadataRecord]]:
    """(meta_file, train, valid) real labelled records; case-level, as generation split them."""
    meta_file, records, splits, _ = labelled_splits(dataset, splits_file, split)
    train = [r for r in records if splits.get(r.file_name) == "train"]
    valid = [r for r in records if splits.get(r.file_name) == "valid"]
    if not train or not valid:
        raise MetadataError(meta_file, "need real train and valid images to fit the segmenter")
    if {r.case_id for r in train} & {r.case_id for r in valid}:
        raise MetadataError(meta_file, "train and valid share cases: splits must be by case")
    return meta_file, train, valid


def load_pairs(pairs: list[tuple[Path, Path]], size: int) -> tuple[torch.Tensor, np.ndarray]:
    """(images [N,1,S,S] float in [0,1], masks [N,S,S] bool), resized like the conditions."""
    images, masks = [], []
    for image_path, mask_path in pairs:
        try:
            images.append(load_grey(image_path, size) / 255.0)
            masks.append(load_mask(mask_path, size))
        except (OSError, ValueError) as error:
            raise MetadataError(image_path, f"cannot read image or mask ({error})") from None
    return torch.from_numpy(np.stack(images).astype(np.float32))[:, None], np.stack(masks)


def requested_background(row: dict, condition_bg: Path, mask: np.ndarray, size: int) -> float:
    """The background mean the image was asked for: text_bg's first number, else the map's."""
    found = LEADING_NUMBER.match(row.get("text_bg") or "")
    if found:
        return float(found.group(1))
    return measure_background(load_grey(condition_bg, size), mask).mean


def correlation(measured: list[float], requested: list[float]) -> dict:
    """Pearson r with its Fisher-z 95% interval (scipy), and the mean absolute error."""
    x, y = np.asarray(requested, dtype=np.float64), np.asarray(measured, dtype=np.float64)
    result: dict = {"n": int(x.size), "pearson_r": None, "pearson_ci95": None}
    result["mean_abs_error"] = float(np.abs(x - y).mean()) if x.size else None
    if x.size >= 4 and x.std() > 0 and y.std() > 0:
        test = stats.pearsonr(x, y)
        interval = test.confidence_interval(0.95)
        result["pearson_r"] = float(test.statistic)
        result["pearson_ci95"] = [float(interval.low), float(interval.high)]
    return result


def measure_control(
    gen_dir: str | os.PathLike,
    dataset: str | os.PathLike,
    splits_file: str | os.PathLike | None = None,
    split: SplitConfig | None = None,
    config: ControlConfig | None = None,
    out_file: str | os.PathLike | None = None,
    segmenter_cache: str | os.PathLike | None = None,
) -> dict:
    """FG IoU (with shuffled-mask control and real ceiling) and BG agreement of GEN.
    `segmenter_cache`: a folder where the fitted segmenter is kept, keyed by what it was fit
    on, so every folder of one run is measured by one fit (`segmenter.fitted_segmenter`)."""
    config = (config or ControlConfig()).validate()
    started, cpu_started = time.perf_counter(), time.process_time()
    gen = Path(gen_dir)
    rows = read_rows(gen)
    if not rows:
        raise MetadataError(gen / "manifest.jsonl", "no generated images listed")
    meta_file, train, valid = real_train_valid(dataset, splits_file, split)
    size = config.image_size

    def real_pairs(records: list[MetadataRecord]) -> list[tuple[Path, Path]]:
        return [
            (resolve(meta_file, r.file_name), resolve(meta_file, r.condition_FG)) for r in records
        ]

    train_pairs = real_pairs(train)
    train_images, train_masks = load_pairs(train_pairs, size)
    fit_cpu = time.process_time()
    segmenter, from_cache = fitted_segmenter(
        config,
        train_pairs,
        train_images,
        torch.from_numpy(train_masks[:, None].astype(np.float32)),
        Path(segmenter_cache) if segmenter_cache else None,
    )
    fit_cpu = time.process_time() - fit_cpu
    valid_images, valid_masks = load_pairs(real_pairs(valid), size)
    ceiling = [
        iou(p, m) for p, m in zip(segmenter.predict_batch(valid_images), valid_masks, strict=True)
    ]

    gen_pairs = [(gen / r["file_name"], gen / r["condition_FG"]) for r in rows]
    images, masks = load_pairs(gen_pairs, size)
    predicted = segmenter.predict_batch(images)
    fg = [iou(p, m) for p, m in zip(predicted, masks, strict=True)]
    other = derangement(len(rows), config.seed) if len(rows) > 1 else np.zeros(0, dtype=int)
    shuffled = [iou(predicted[i], masks[j]) for i, j in enumerate(other)]

    measured, requested, per_image = [], [], []
    for k, row in enumerate(rows):
        resolution = int(row.get("resolution") or size)
        image_path, mask_path = gen_pairs[k]
        full_mask = load_mask(mask_path, resolution)
        entry = {"file_name": row["file_name"], "fg_iou": fg[k]}
        try:
            grey = load_grey(image_path, resolution)
            bg_measured = measure_background(grey, full_mask).mean
            bg_requested = requested_background(
                row, gen / row["condition_BG"], full_mask, resolution
            )
        except ValueError:  # the nodule covers the frame: no background to measure
            bg_measured = bg_requested = None
        except OSError as error:
            raise MetadataError(gen / row["condition_BG"], f"cannot read ({error})") from None
        entry.update(bg_measured=bg_measured, bg_requested=bg_requested)
        if bg_measured is not None:
            measured.append(bg_measured)
            requested.append(bg_requested)
        per_image.append(entry)

    report = {
        "gen": str(gen),
        "n_images": len(rows),
        "fg_iou": summary(fg, config.seed),
        "fg_iou_shuffled_masks": summary(shuffled, config.seed),
        "fg_iou_minus_shuffled": summary(
            [fg[i] - shuffled[i] for i in range(len(shuffled))], config.seed
        ),
        "fg_empty_fraction": float(np.mean([not p.any() for p in predicted])),
        "segmenter_real_held_out_iou": summary(ceiling, config.seed),
        "bg": correlation(measured, requested),
        "settings": {
            **asdict(config),
            "dataset": str(dataset),
            "splits": str(splits_file) if splits_file else f"{split or SplitConfig()!r}",
            "n_real_train": len(train),
            "n_real_valid": len(valid),
            "segmenter_fit_cpu_seconds": round(fit_cpu, 2),
            "segmenter_from_cache": from_cache,
            "cpu_seconds": round(time.process_time() - cpu_started, 2),
            "wall_seconds": round(time.perf_counter() - started, 2),
            "torch_threads": torch.get_num_threads(),
        },
    }
    if out_file is not None:
        write_json(out_file, {**report, "per_image": per_image})
    return report
