"""A generic folder: images, lesion masks and a CSV with one row per image.

CSV columns (a header row is required; extra columns are ignored):

- `image` (required): the frame, a path relative to the CSV's folder;
- `mask` (required column): its lesion mask (white on black), relative to the CSV's folder;
  several lesions as several files separated by `;` (the FG condition is their union, each
  lesion's geometry is kept); empty for a frame of the label set's lesion-free class;
- `label` (required): one of the label set's classes (thyroid default: benign, PTC, FTC, MTC,
  malignant) or `unlabelled` (used by the diffusion stages, never by a classifier task);
- `case_id` (optional): the patient; defaults to the image's name, so give it or the splits
  cannot keep a patient's frames together;
- attribute columns (optional): `composition`, `echogenicity`, `shape`, `margins`,
  `calcifications`, `halo` (yes/no), `size`, in the words of metadata.vocabulary (shape and size
  are measured from the mask when empty), plus the label set's own `attribute_words` columns.

Every path must stay inside the CSV's folder. Near-identical frames of different cases are
merged into one case; a merged group whose labels disagree is refused (or, with
`drop_conflicts`, left out and listed in duplicate_cases.json).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from metadata.builder import Sample, SkippedSample, build_dataset
from metadata.importers.images import read_grey, read_mask
from metadata.labelset import LabelSet, load_labelset_file
from metadata.validate import inside
from metadata.vocabulary import ATTRIBUTE_VALUES, NoduleAttributes

REQUIRED_COLUMNS = ("image", "mask", "label")
MASK_SEPARATOR = ";"


def parse_halo(value: str) -> bool | None:
    lowered = value.strip().lower()
    if lowered in ("", "none", "unknown"):
        return None
    if lowered in ("1", "true", "yes", "halo"):
        return True
    if lowered in ("0", "false", "no"):
        return False
    raise ValueError(f"halo must be yes/no, got {value!r}")


def inside_path(base: Path, relative: str, role: str) -> Path:
    path = (base / relative).resolve()
    if not inside(path, base.resolve()):
        raise ValueError(f"{role} path {relative!r} escapes {base}")
    return path


def row_sample(row: dict, base: Path, labels: LabelSet) -> Sample:
    values = {name: (row.get(name) or "").strip() or None for name in ATTRIBUTE_VALUES}
    other = {name: (row.get(name) or "").strip() for name in labels.attribute_words}
    attributes = NoduleAttributes(
        label=(row["label"] or "").strip(),
        halo=parse_halo(row.get("halo") or ""),
        other={k: v for k, v in other.items() if v},
        **values,
    )
    labels.check_label(attributes.label)
    image_path = inside_path(base, (row["image"] or "").strip(), "image")
    image = read_grey(image_path)
    lesions = []
    for part in (row["mask"] or "").split(MASK_SEPARATOR):
        if part.strip():
            lesion = read_mask(inside_path(base, part.strip(), "mask"))
            if lesion.shape != image.shape:
                raise ValueError(f"{part.strip()}: size {lesion.shape} differs from {image.shape}")
            lesions.append(lesion)
    union = np.logical_or.reduce(lesions) if lesions else np.zeros(image.shape, bool)
    return Sample(
        stem=image_path.stem,
        image=image,
        mask=union,
        attributes=attributes,
        case_id=(row.get("case_id") or "").strip() or image_path.stem,
        source="generic",
        lesions=lesions,
    )


def read_rows(csv_path: Path) -> list[dict]:
    if not csv_path.is_file():
        raise ValueError(f"{csv_path}: CSV file not found")
    with open(csv_path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{csv_path}: missing column(s) {', '.join(missing)}")
        return list(reader)


def generic_samples(
    csv_path: Path, labels: LabelSet | None = None
) -> Iterator[Sample | SkippedSample]:
    labels = labels or LabelSet.thyroid()
    for line_no, row in enumerate(read_rows(csv_path), start=2):
        try:
            yield row_sample(row, csv_path.parent, labels)
        except ValueError as error:
            yield SkippedSample(f"{csv_path}:{line_no}", str(error))


def import_generic(
    csv_path: str | os.PathLike,
    out_root: str | os.PathLike,
    skip_bad: bool = False,
    labels_file: str | os.PathLike | None = None,
    drop_conflicts: bool = False,
    workers: int | None = None,
) -> Path:
    csv_path = Path(csv_path)
    labels = load_labelset_file(labels_file) if labels_file else LabelSet.thyroid()
    return build_dataset(
        generic_samples(csv_path, labels),
        out_root,
        skip_bad=skip_bad,
        labels=labels,
        drop_conflicts=drop_conflicts,
        workers=workers,
        total=len(read_rows(csv_path)),
    )
