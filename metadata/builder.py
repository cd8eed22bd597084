"""Turn (image, lesion masks, attributes) samples into a Tiger dataset folder.

Everything is written into a staging folder that replaces the destination only when the whole
dataset is complete, so a failure never leaves a half-written dataset behind. Frames are
processed by a pool of worker processes (each frame is independent, so the dataset is the same
for any worker count) behind a progress bar.

A sample may hold several lesions (the FG condition is their union; each lesion's geometry is
kept in `attributes["lesions"]`) or none, when its class is the label set's lesion-free class
(an empty FG condition, the whole frame as background).
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

from metadata.atomic import save_png, staging_dir, write_json
from metadata.background import compose_text_bg, measure_background, tissue_map
from metadata.labelset import LABELS_FILE, LabelSet
from metadata.near_duplicates import (
    THRESHOLD,
    THUMBNAIL,
    find_duplicate_cases,
    save_duplicate_grid,
    thumbnail_vector,
)
from metadata.records import BG_DIR, FG_DIR, IMAGE_DIR, METADATA_FILE, MetadataRecord
from metadata.records import write_metadata as write_records
from metadata.vocabulary import NoduleAttributes, compose_text_nd, fill_measured, measure_mask

SKIP_REPORT = "skipped.json"
DUPLICATES_REPORT = "duplicate_cases.json"
DUPLICATES_GRID = "duplicate_cases.png"
DATASET_MARKER = "dataset.json"  # written last: a folder the builder finished
DATASET_FORMAT = "tiger-dataset/1"
MAX_WORKERS = 8


class DuplicateConflictError(ValueError):
    """Near-identical frames filed under different labels: label noise, refused by default."""


@dataclass
class Sample:
    """One frame with its lesion(s), as an importer hands it to the builder."""

    stem: str
    image: np.ndarray  # uint8 HxW (grey) or HxWx3
    mask: np.ndarray  # bool HxW: the union of the lesions (all False for a lesion-free frame)
    attributes: NoduleAttributes
    case_id: str
    source: str
    extra: dict = field(default_factory=dict)
    lesions: list[np.ndarray] = field(default_factory=list)  # one mask per lesion, if several


@dataclass
class SkippedSample:
    """An input that could not be used, and why (written to skipped.json with --skip-bad)."""

    where: str
    problem: str


@dataclass
class BuiltSample:
    """What a worker returns: the record (files already written) and its thumbnail."""

    record: MetadataRecord
    thumbnail: np.ndarray


def sha256(path: Path) -> str:
    """Content hash of metadata.jsonl: the marker holds only while the records are unedited."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def grey_of(image: np.ndarray) -> np.ndarray:
    grey = image if image.ndim == 2 else image[..., :3].mean(-1)
    return np.asarray(grey).round().astype(np.uint8)


def lesion_stats(lesions: list[np.ndarray]) -> list[dict]:
    """Per-lesion geometry (bounding box top/left/bottom/right, area, diameter, words)."""
    stats = []
    for lesion in lesions:
        geometry = measure_mask(lesion)
        rows = np.flatnonzero(lesion.any(axis=1))
        cols = np.flatnonzero(lesion.any(axis=0))
        stats.append(
            {
                "bbox": [int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1],
                "area": geometry.area,
                "equivalent_diameter": round(geometry.equivalent_diameter, 3),
                "shape": geometry.shape,
                "size": geometry.size,
            }
        )
    return stats


def sample_lesions(sample: Sample, labels: LabelSet) -> list[np.ndarray]:
    """The sample's lesion masks, checked against its class (lesion-free or not)."""
    mask = np.asarray(sample.mask) > 0
    lesions = [np.asarray(m) > 0 for m in sample.lesions] or ([mask] if mask.any() else [])
    lesions = [lesion for lesion in lesions if lesion.any()]
    lesion_free = sample.attributes.label == labels.lesion_free
    if lesion_free and lesions:
        raise ValueError(f"class {labels.lesion_free!r} is lesion-free, but the mask is not empty")
    if not lesion_free and not lesions:
        hint = f" (only class {labels.lesion_free!r} may have none)" if labels.lesion_free else ""
        raise ValueError(f"empty nodule mask{hint}")
    return lesions


def check_attributes(attributes: NoduleAttributes, labels: LabelSet) -> None:
    labels.check_label(attributes.label)
    for name, value in attributes.other.items():
        allowed = labels.attribute_words.get(name)
        if allowed is None:
            raise ValueError(f"attribute {name!r} is not declared in the label set")
        if value not in allowed:
            raise ValueError(f"unknown {name} {value!r}; expected one of {list(allowed)}")


def build_record(sample: Sample, root: Path, labels: LabelSet) -> BuiltSample:
    """Write one frame's three images; its record and thumbnail. Pure in its inputs."""
    grey = grey_of(sample.image)
    mask = np.asarray(sample.mask) > 0
    if grey.shape != mask.shape:
        raise ValueError(f"image {grey.shape} and mask {mask.shape} sizes differ")
    check_attributes(sample.attributes, labels)
    lesions = sample_lesions(sample, labels)
    for lesion in lesions:
        if lesion.shape != grey.shape:
            raise ValueError(f"image {grey.shape} and lesion mask {lesion.shape} sizes differ")
    union = np.logical_or.reduce(lesions) if lesions else np.zeros_like(mask)
    attributes = sample.attributes
    if lesions:  # shape and size describe the largest lesion
        attributes = fill_measured(attributes, max(lesions, key=lambda m: int(m.sum())))
    stats = measure_background(grey, union)
    name = f"{sample.stem}.png"
    save_png(root / IMAGE_DIR / name, grey)
    save_png(root / FG_DIR / name, np.repeat((union * 255).astype(np.uint8)[..., None], 3, -1))
    save_png(root / BG_DIR / name, tissue_map(grey, union))
    details = {**attributes.to_dict(), **sample.extra}
    if len(lesions) > 1:
        details["lesions"] = lesion_stats(lesions)
    if not lesions:
        details["lesion_free"] = True
    record = MetadataRecord(
        file_name=name,
        condition_FG=f"../{FG_DIR}/{name}",
        condition_BG=f"../{BG_DIR}/{name}",
        text_nd=compose_text_nd(attributes, labels),
        text_bg=compose_text_bg(stats),
        case_id=sample.case_id,
        label=attributes.label,
        source=sample.source,
        attributes=details,
        bg_stats=stats.as_list(),
    )
    return BuiltSample(record, thumbnail_vector(grey))


def build_or_skip(sample: Sample, root: Path, labels: LabelSet) -> BuiltSample | SkippedSample:
    """A worker's job: errors come back as values, so one bad frame does not stop the pool."""
    try:
        return build_record(sample, root, labels)
    except ValueError as error:
        where = sample.extra.get("original") or f"{sample.source}:{sample.stem}"
        return SkippedSample(where=str(where), problem=str(error))


def default_workers() -> int:
    """The CPUs this process may use (all of them where affinity is unknown), at most 8."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(MAX_WORKERS, cpus or 1))


def built_samples(
    samples: Iterable[Sample | SkippedSample], root: Path, labels: LabelSet, workers: int
) -> Iterator[BuiltSample | SkippedSample]:
    """Results in input order; a bounded window of frames in flight keeps memory flat."""
    if workers <= 1:
        for sample in samples:
            yield (
                sample if isinstance(sample, SkippedSample) else build_or_skip(sample, root, labels)
            )
        return
    window: deque[Future | SkippedSample] = deque()
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        for sample in samples:
            if isinstance(sample, SkippedSample):
                window.append(sample)
            else:
                window.append(pool.submit(build_or_skip, sample, root, labels))
            while len(window) > 4 * workers:
                item = window.popleft()
                yield item if isinstance(item, SkippedSample) else item.result()
        while window:
            item = window.popleft()
            yield item if isinstance(item, SkippedSample) else item.result()


def merge_duplicate_cases(
    records: list[MetadataRecord], thumbnails: np.ndarray, root: Path, drop_conflicts: bool
) -> list[MetadataRecord]:
    """Give cases that share a near-identical frame one case id (metadata.near_duplicates).

    The id a record was listed under stays in attributes["listed_case_id"]; the groups go to
    duplicate_cases.json and a picture of them to duplicate_cases.png. Splits, CLIP and MoSo
    hold-outs all split by case_id, so they all keep a duplicated patient on one side. A group
    whose frames carry different labels is refused (which label is right is unknowable), or,
    with `drop_conflicts`, left out and listed. Returns the records kept.
    """
    found = find_duplicate_cases([r.case_id for r in records], thumbnails)
    labels_of: dict[int, set[str]] = {}
    group_of = {case: index for index, group in enumerate(found.groups) for case in group}
    for record in records:
        if record.case_id in group_of and record.label not in ("", "unlabelled"):
            labels_of.setdefault(group_of[record.case_id], set()).add(record.label)
    conflicts = [index for index, seen in sorted(labels_of.items()) if len(seen) > 1]
    conflict_files = {
        index: sorted(
            f"{r.file_name} ({r.label}, case {r.case_id})"
            for r in records
            if group_of.get(r.case_id) == index
        )
        for index in conflicts
    }
    if conflicts and not drop_conflicts:
        listing = "; ".join(", ".join(files) for files in conflict_files.values())
        raise DuplicateConflictError(
            f"{len(conflicts)} group(s) of near-identical frames carry different labels: "
            f"{listing}. Fix the labels, or pass --drop-conflicts to leave these cases out"
        )
    dropped_cases = {case for index in conflicts for case in found.groups[index]}
    kept = [r for r in records if r.case_id not in dropped_cases]
    merged = found.representative()
    for record in kept:
        if record.case_id in merged:
            record.attributes["listed_case_id"] = record.case_id
            record.case_id = merged[record.case_id]
    write_json(
        root / DUPLICATES_REPORT,
        {
            "rule": f"frames of different cases whose {THUMBNAIL} px thumbnails correlate "
            f">= {THRESHOLD}",
            "groups": found.groups,
            "cases_merged": sum(len(g) for i, g in enumerate(found.groups) if i not in conflicts),
            "labels": {
                found.groups[index][0]: sorted(seen) for index, seen in sorted(labels_of.items())
            },
            "dropped_conflicts": [
                {"cases": found.groups[index], "files": conflict_files[index]}
                for index in conflicts
            ],
        },
    )
    if found.groups:
        save_duplicate_grid(records, found.groups, root, root / DUPLICATES_GRID)
    for record in records:
        if record.case_id in dropped_cases:
            for folder in (IMAGE_DIR, FG_DIR, BG_DIR):
                (root / folder / record.file_name).unlink(missing_ok=True)
    if not kept:
        raise ValueError("every record was dropped as a conflicting duplicate")
    return kept


def build_dataset(
    samples: Iterable[Sample | SkippedSample],
    out_root: str | os.PathLike,
    skip_bad: bool = False,
    labels: LabelSet | None = None,
    drop_conflicts: bool = False,
    workers: int | None = None,
    total: int | None = None,
    progress: bool = True,
) -> Path:
    """Write the dataset; without `skip_bad` the first bad sample aborts with nothing written."""
    out_root = Path(out_root)
    labels = labels or LabelSet.thyroid()
    workers = default_workers() if workers is None else workers
    records: list[MetadataRecord] = []
    thumbnails: list[np.ndarray] = []
    skipped: list[SkippedSample] = []
    seen: set[str] = set()
    bar = tqdm(
        total=total,
        desc=f"import {out_root.name}",
        unit="frame",
        disable=not progress,
        mininterval=2.0,
    )

    def unique(items: Iterable[Sample | SkippedSample]) -> Iterator[Sample | SkippedSample]:
        for sample in items:
            if isinstance(sample, Sample):
                if sample.stem in seen:
                    raise ValueError(f"{sample.source}:{sample.stem}: duplicate image name")
                seen.add(sample.stem)
            yield sample

    with staging_dir(out_root) as staging, bar:
        for result in built_samples(unique(samples), staging, labels, workers):
            bar.update(1)
            if isinstance(result, SkippedSample):
                if not skip_bad:
                    raise ValueError(f"{result.where}: {result.problem}")
                skipped.append(result)
                continue
            records.append(result.record)
            thumbnails.append(result.thumbnail)
        if not records:
            raise ValueError(f"no usable samples for {out_root}")
        records = merge_duplicate_cases(records, np.stack(thumbnails), staging, drop_conflicts)
        written = write_records(staging, records)
        write_json(staging / LABELS_FILE, labels.to_json())
        if skip_bad:
            write_json(
                staging / SKIP_REPORT,
                {"skipped": [{"where": s.where, "problem": s.problem} for s in skipped]},
            )
        write_json(
            staging / DATASET_MARKER,
            {"format": DATASET_FORMAT, "records": len(records), "metadata_sha256": sha256(written)},
        )
    return out_root / IMAGE_DIR / METADATA_FILE
