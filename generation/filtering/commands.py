"""The four filtering jobs as functions (the CLI only parses arguments and calls these)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from generation.filtering.clip_model import load_model
from generation.filtering.clip_report import compare_paired, describe
from generation.filtering.clip_score import clip_scores, mismatched_texts
from generation.filtering.filter_report import write_report
from generation.filtering.images import thumbnails
from generation.filtering.manifest import (
    read_manifest,
    read_scores,
    write_filtered_manifest,
)
from generation.filtering.moso_params import MosoConfig
from generation.filtering.moso_pool import build_pool
from generation.filtering.moso_run import moso_scores
from generation.filtering.off_distribution import (
    nearest_correlation,
    real_reference,
    unlike_real,
)
from generation.filtering.select import FilterConfig, select
from metadata.atomic import write_json, write_jsonl
from metadata.records import MetadataError, metadata_path, read_metadata, resolve


def held_out_pairs(split_file: Path) -> tuple[list[Path], list[str]]:
    """Real held-out images and their texts, from the split the CLIP was trained with."""
    split = json.loads(split_file.read_text())
    meta_file = metadata_path(split["dataset"])
    held = set(split["held_out"])
    records = [r for r in read_metadata(meta_file) if r.file_name in held]
    return [resolve(meta_file, r.file_name) for r in records], [r.text_nd for r in records]


def run_clip_score(
    model_dir: Path, manifest: Path, out_dir: Path, text_key: str = "text_nd", seed: int = 0
) -> dict:
    """Write clip_scores.jsonl (one per synthetic image) and clip_report.json."""
    model, preprocess, tokenizer = load_model(model_dir)
    images = read_manifest(manifest)
    paths = [image.path for image in images]
    texts = [image.text(text_key) for image in images]
    matched = clip_scores(model, preprocess, tokenizer, paths, texts)
    write_jsonl(
        out_dir / "clip_scores.jsonl",
        ({"id": im.id, "clip_score": float(s)} for im, s in zip(images, matched)),
    )
    report: dict = {"model": str(model_dir), "manifest": str(manifest), "text_key": text_key}
    report["synthetic_matched"] = describe(matched, seed)
    if len(set(texts)) >= 2:
        control = clip_scores(model, preprocess, tokenizer, paths, mismatched_texts(texts, seed))
        report["synthetic_mismatched"] = describe(control, seed)
        report["matched_vs_mismatched"] = compare_paired(matched, control, seed)
    split_file = Path(model_dir).parent / "split.json"
    if split_file.is_file():
        real_paths, real_texts = held_out_pairs(split_file)
        if real_paths:
            real = clip_scores(model, preprocess, tokenizer, real_paths, real_texts)
            report["real_held_out_matched"] = describe(real, seed)
            if len(set(real_texts)) >= 2:
                real_control = clip_scores(
                    model, preprocess, tokenizer, real_paths, mismatched_texts(real_texts, seed)
                )
                report["real_held_out_mismatched"] = describe(real_control, seed)
                report["real_matched_vs_mismatched"] = compare_paired(real, real_control, seed)
    write_json(out_dir / "clip_report.json", report)
    return report


def run_moso(
    dataset: Path | None,
    manifest: Path,
    out_dir: Path,
    config: MosoConfig,
    holdout_fraction: float = 0.2,
) -> Path:
    """Score the pool (real train + synthetic); writes moso_scores.jsonl for every pool sample."""
    pool = build_pool(dataset, read_manifest(manifest), holdout_fraction, config.seed)
    if len(pool.classes) < 2:
        raise ValueError(f"{manifest}: MoSo needs at least two classes in the pool")
    images = pool.image_tensor(config.image_size)
    torch.manual_seed(config.seed)
    scored = None if config.score_real else np.array([s == "synthetic" for s in pool.sources])
    scores = moso_scores(
        images, pool.label_tensor(), len(pool.classes), config, out_dir / "surrogates", scored
    )
    target = out_dir / "moso_scores.jsonl"
    write_jsonl(
        target,
        (
            {"id": i, "source": s, "label": lab, "moso_score": float(v)}
            for i, s, lab, v in zip(pool.ids, pool.sources, pool.labels, scores)
            if not np.isnan(v)
        ),
    )
    write_json(out_dir / "moso_config.json", config.__dict__)
    return target


def run_filter(
    manifest: Path,
    out_dir: Path,
    config: FilterConfig,
    clip_file: Path | None,
    moso_file: Path | None,
    reference: Path | None = None,
    holdout_fraction: float = 0.2,
) -> dict:
    """Write FILTERED/manifest.jsonl (all rows, with scores, kept, drop_reason) and a report.

    With a `reference` dataset (the real train data), frames whose best correlation with a real
    train frame is below `config.off_distribution_fraction` times the least typical held-out real
    frame's are dropped first (generation/filtering/off_distribution)."""
    images = read_manifest(manifest)
    clip = read_scores(clip_file, "clip_score") if clip_file else {}
    moso = read_scores(moso_file, "moso_score") if moso_file else {}
    for needed, scores, file in (
        (config.uses_clip, clip, clip_file),
        (config.moso_prune_ratio > 0, moso, moso_file),
    ):
        if needed:
            missing = [im.id for im in images if im.id not in scores]
            if missing:
                where = file or manifest
                raise MetadataError(where, f"no score for {len(missing)} id(s), e.g. {missing[0]}")
    clip_values = np.array([clip.get(im.id, math.nan) for im in images])
    moso_values = np.array([moso.get(im.id, math.nan) for im in images])
    needs_vectors = config.drop_duplicates or reference is not None
    vectors = thumbnails([im.path for im in images]) if needs_vectors else None
    settings: dict = dict(config.__dict__)
    nearest = flags = None
    if reference is not None:
        real = real_reference(reference, holdout_fraction)
        threshold = config.off_distribution_fraction * real.held_out_minimum
        nearest = nearest_correlation(vectors, real.train)
        flags = unlike_real(nearest, threshold)
        settings["off_distribution"] = {
            "reference": str(reference),
            "held_out_minimum": real.held_out_minimum,
            "threshold": threshold,
            "held_out_frames": real.held_out_frames,
        }
    labels = [im.label for im in images]
    reasons = select(labels, clip_values, moso_values, config, vectors, flags)
    rows = []
    for index, (image, reason) in enumerate(zip(images, reasons)):
        row = dict(image.row)
        row["file_name"] = str(image.path)
        row["clip_score"] = clip.get(image.id)
        row["moso_score"] = moso.get(image.id)
        if nearest is not None:
            row["nearest_real_correlation"] = float(nearest[index])
        row["kept"] = not reason
        row["drop_reason"] = reason
        rows.append(row)
    write_filtered_manifest(out_dir, rows)
    return write_report(out_dir, rows, settings)


def run_quality(
    model_dir: Path,
    manifest: Path,
    dataset: Path,
    splits_file: Path,
    out_dir: Path,
    filtered: Path | None = None,
    extra: dict[str, Path] | None = None,
    inception_weights: Path | None = None,
) -> dict:
    """Quality of each synthetic set (by mode, and the filtered set when given) against the
    real images of its class, in the domain CLIP's space (generation.filtering.quality)."""
    from generation.filtering.clip_score import encode_images
    from generation.filtering.quality import quality_report
    from generation.inference.sources import labelled_splits

    model, preprocess, _ = load_model(model_dir)
    images = read_manifest(manifest)
    labels = sorted({image.label for image in images})
    if len(labels) != 1:
        raise ValueError(f"{manifest}: quality is measured per class, found labels {labels}")
    meta_file, records, splits, _ = labelled_splits(dataset, splits_file)
    own = [r for r in records if r.label == labels[0] and not r.attributes.get("lesion_free")]
    train = [resolve(meta_file, r.file_name) for r in own if splits.get(r.file_name) == "train"]
    held = [
        resolve(meta_file, r.file_name) for r in own if splits.get(r.file_name) in ("valid", "test")
    ]
    if min(len(train), len(held)) < 2:  # a measurement, not a stage's job: say so and go on
        report = {"label": labels[0], "skipped": f"{len(train)} train / {len(held)} held-out "
                  f"real {labels[0]} images (need 2 each)"}  # fmt: skip
        write_json(Path(out_dir) / "quality.json", report)
        return report
    paths = {}
    for mode in sorted({str(image.row.get("mode", "all")) for image in images}):
        paths[mode] = [im.path for im in images if str(im.row.get("mode", "all")) == mode]
    if filtered is not None:
        paths["filtered"] = [im.path for im in read_manifest(filtered) if im.row.get("kept")]
    for name, location in (extra or {}).items():  # e.g. the coarse model's images
        paths[name] = [im.path for im in read_manifest(location)]

    def measured(encode) -> dict:
        sets = {name: encode(files) for name, files in paths.items()}
        return quality_report(encode(train), encode(held), sets)

    report = measured(lambda files: encode_images(model, preprocess, files))
    report.update({"label": labels[0], "model": str(model_dir), "space": "domain CLIP image"})
    if inception_weights is not None:  # the field's FID/KID, from the user's local weights
        from generation.filtering.inception import (
            inception_features,
            inception_network,
            safe_tensor_copy,
        )

        network = inception_network(safe_tensor_copy(inception_weights, Path(out_dir) / ".cache"))
        report["inception"] = measured(lambda files: inception_features(network, files))
    write_json(Path(out_dir) / "quality.json", report)
    return report
