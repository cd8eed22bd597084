"""A generic folder: images, masks and a CSV with one row per image.

CSV columns (header required): `image`, `mask`, `label` (benign, PTC, FTC, MTC, malignant,
unlabelled), optional `case_id` (defaults to the image stem: give it, or splits cannot be by
patient), and optional attribute columns `composition`, `echogenicity`, `shape`, `margins`,
`calcifications`, `halo`, `size` using the words of metadata.vocabulary. Paths are relative to
the CSV's folder.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from pathlib import Path

from metadata.builder import Sample, SkippedSample, build_dataset
from metadata.importers.images import read_grey, read_mask
from metadata.vocabulary import ATTRIBUTE_VALUES, NoduleAttributes

REQUIRED_COLUMNS = ("image", "mask", "label")


def parse_halo(value: str) -> bool | None:
    lowered = value.strip().lower()
    if lowered in ("", "none", "unknown"):
        return None
    if lowered in ("1", "true", "yes", "halo"):
        return True
    if lowered in ("0", "false", "no"):
        return False
    raise ValueError(f"halo must be yes/no, got {value!r}")


def generic_samples(csv_path: Path) -> Iterator[Sample | SkippedSample]:
    if not csv_path.is_file():
        raise ValueError(f"{csv_path}: CSV file not found")
    with open(csv_path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{csv_path}: missing column(s) {', '.join(missing)}")
        for line_no, row in enumerate(reader, start=2):
            where = f"{csv_path}:{line_no}"
            try:
                values = {name: (row.get(name) or "").strip() or None for name in ATTRIBUTE_VALUES}
                attributes = NoduleAttributes(
                    label=row["label"].strip(), halo=parse_halo(row.get("halo") or ""), **values
                )
                image_path = csv_path.parent / row["image"].strip()
                image = read_grey(image_path)
                mask = read_mask(csv_path.parent / row["mask"].strip())
            except ValueError as error:
                yield SkippedSample(where, str(error))
                continue
            yield Sample(
                stem=image_path.stem,
                image=image,
                mask=mask,
                attributes=attributes,
                case_id=(row.get("case_id") or "").strip() or image_path.stem,
                source="generic",
            )


def import_generic(
    csv_path: str | os.PathLike, out_root: str | os.PathLike, skip_bad: bool = False
) -> Path:
    return build_dataset(generic_samples(Path(csv_path)), out_root, skip_bad=skip_bad)
