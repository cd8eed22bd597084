"""Turn (image, nodule mask, attributes) samples into a Tiger dataset folder.

Everything is written into a staging folder that replaces the destination only when the whole
dataset is complete, so a failure never leaves a half-written dataset behind.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from metadata.atomic import save_png, staging_dir, write_json
from metadata.background import compose_text_bg, measure_background, tissue_map
from metadata.near_duplicates import (
    THRESHOLD,
    THUMBNAIL,
    find_duplicate_cases,
    thumbnail_vector,
)
from metadata.records import BG_DIR, FG_DIR, IMAGE_DIR, METADATA_FILE, MetadataRecord
from metadata.records import write_metadata as write_records
from metadata.vocabulary import NoduleAttributes, compose_text_nd, fill_measured

SKIP_REPORT = "skipped.json"
DUPLICATES_REPORT = "duplicate_cases.json"


@dataclass
class Sample:
    """One frame with its nodule, as an importer hands it to the builder."""

    stem: str
    image: np.ndarray  # uint8 HxW (grey) or HxWx3
    mask: np.ndarray  # bool HxW
    attributes: NoduleAttributes
    case_id: str
    source: str
    extra: dict = field(default_factory=dict)


@dataclass
class SkippedSample:
    """An input that could not be used, and why (written to skipped.json with --skip-bad)."""

    where: str
    problem: str


def grey_of(image: np.ndarray) -> np.ndarray:
    grey = image if image.ndim == 2 else image[..., :3].mean(-1)
    return np.asarray(grey).round().astype(np.uint8)


def merge_duplicate_cases(records: list[MetadataRecord], thumbnails: np.ndarray, root: Path):
    """Give cases that share a near-identical frame one case id (metadata.near_duplicates).

    The id a record was listed under stays in attributes["listed_case_id"]; the groups go to
    duplicate_cases.json. Splits, CLIP and MoSo hold-outs all split by case_id, so they all
    keep a duplicated patient on one side.
    """
    found = find_duplicate_cases([r.case_id for r in records], thumbnails)
    merged = found.representative()
    labels: dict[str, set[str]] = {}
    for record in records:
        if record.case_id in merged:
            record.attributes["listed_case_id"] = record.case_id
            record.case_id = merged[record.case_id]
            labels.setdefault(record.case_id, set()).add(record.label)
    write_json(
        root / DUPLICATES_REPORT,
        {
            "rule": f"frames of different cases whose {THUMBNAIL} px thumbnails correlate "
            f">= {THRESHOLD}",
            "groups": found.groups,
            "labels": {case: sorted(found) for case, found in sorted(labels.items())},
        },
    )


def build_record(sample: Sample, root: Path) -> MetadataRecord:
    grey = grey_of(sample.image)
    mask = np.asarray(sample.mask) > 0
    if grey.shape != mask.shape:
        raise ValueError(f"image {grey.shape} and mask {mask.shape} sizes differ")
    if not mask.any():
        raise ValueError("empty nodule mask")
    attributes = fill_measured(sample.attributes, mask)
    stats = measure_background(grey, mask)
    name = f"{sample.stem}.png"
    save_png(root / IMAGE_DIR / name, grey)
    save_png(root / FG_DIR / name, np.repeat((mask * 255).astype(np.uint8)[..., None], 3, -1))
    save_png(root / BG_DIR / name, tissue_map(grey, mask))
    details = {**attributes.to_dict(), **sample.extra}
    return MetadataRecord(
        file_name=name,
        condition_FG=f"../{FG_DIR}/{name}",
        condition_BG=f"../{BG_DIR}/{name}",
        text_nd=compose_text_nd(attributes),
        text_bg=compose_text_bg(stats),
        case_id=sample.case_id,
        label=attributes.label,
        source=sample.source,
        attributes=details,
        bg_stats=stats.as_list(),
    )


def build_dataset(
    samples: Iterable[Sample | SkippedSample],
    out_root: str | os.PathLike,
    skip_bad: bool = False,
) -> Path:
    """Write the dataset; without `skip_bad` the first bad sample aborts with nothing written."""
    out_root = Path(out_root)
    records: list[MetadataRecord] = []
    thumbnails: list[np.ndarray] = []
    skipped: list[SkippedSample] = []
    seen: set[str] = set()
    with staging_dir(out_root) as staging:
        for sample in samples:
            if isinstance(sample, SkippedSample):
                if not skip_bad:
                    raise ValueError(f"{sample.where}: {sample.problem}")
                skipped.append(sample)
                continue
            if sample.stem in seen:
                raise ValueError(f"{sample.stem}: duplicate image name")
            seen.add(sample.stem)
            try:
                records.append(build_record(sample, staging))
                thumbnails.append(thumbnail_vector(grey_of(sample.image)))
            except ValueError as error:
                if not skip_bad:
                    raise ValueError(f"{sample.source}:{sample.stem}: {error}") from None
                skipped.append(
                    SkippedSample(where=f"{sample.source}:{sample.stem}", problem=str(error))
                )
        if not records:
            raise ValueError(f"no usable samples for {out_root}")
        merge_duplicate_cases(records, np.stack(thumbnails), staging)
        write_records(staging, records)
        if skip_bad:
            write_json(
                staging / SKIP_REPORT,
                {"skipped": [{"where": s.where, "problem": s.problem} for s in skipped]},
            )
    return out_root / IMAGE_DIR / METADATA_FILE
