"""Synthetic images (from a generation/filtering manifest) and the count-matched duplicate control.

Only `add_to_train` puts extra images into a split, and it refuses every split but train/.
Arm 3 (duplicated real) and arms 4/5 (synthetic) use the same per-class counts from
`matched_counts`, so the control adds exactly as many images per class as the synthetic arm.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from classifier.layout import (
    ImageItem,
    LayoutError,
    SyntheticLeakError,
    class_counts,
    split_records,
)
from metadata.labelset import LabelSet
from metadata.vocabulary import BENIGN


def manifest_label(label: str, subtype: str, negative: str = BENIGN) -> int | None:
    """The task's negative class -> 0 (benign for thyroid), its positive class -> 1, anything
    else (another positive class) -> skipped."""
    if label == negative:
        return 0
    if label == subtype:
        return 1
    return None


def negative_class(croot: str | Path) -> str:
    """The label set's negative class, as the exporter recorded it in CROOT/splits.json."""
    path = Path(croot) / "splits.json"
    try:
        splits = json.loads(path.read_text())
    except (OSError, ValueError):
        return BENIGN  # a layout without splits.json (other tools): thyroid
    return LabelSet.from_splits(splits).negative


def read_manifest(
    manifest: str | Path, subtype: str, require_kept: bool = False, croot: str | Path = ""
) -> list[ImageItem]:
    """Synthetic train candidates for one task; `require_kept` reads a filtered manifest."""
    path = Path(manifest)
    if path.is_dir():
        path = path / "manifest.jsonl"
    if not path.is_file():
        raise LayoutError(path, "synthetic manifest not found")
    protected = []
    held_out: dict[str, str] = {}
    negative = negative_class(croot) if croot else BENIGN
    if croot:
        protected = [(Path(croot) / subtype / s).resolve() for s in ("valid", "test")]
        held_out = held_out_cases(croot)
    items = []
    with open(path, encoding="utf-8") as handle:
        for line_no, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                row = json.loads(text)
            except json.JSONDecodeError as error:
                raise LayoutError(where, f"malformed JSON ({error.msg})") from None
            if not isinstance(row, dict) or "file_name" not in row or "label" not in row:
                raise LayoutError(where, "each row needs 'file_name' and 'label'")
            if require_kept and "kept" not in row:
                raise LayoutError(where, "filtered manifest row has no 'kept' field")
            if require_kept and not row["kept"]:
                continue
            label = manifest_label(str(row["label"]), subtype, negative)
            if label is None:
                continue
            image = Path(row["file_name"])
            image = (image if image.is_absolute() else path.parent / image).resolve()
            if not image.is_file():
                raise LayoutError(where, f"image {image} does not exist")
            if any(image.is_relative_to(folder) for folder in protected):
                raise SyntheticLeakError(where, f"{image} lies in a real valid/test folder")
            check_derived_from_train(row, held_out, where)
            items.append(ImageItem(image, label, "train", "synthetic", f"syn:{image.stem}"))
    return items


def held_out_cases(croot: str | Path) -> dict[str, str]:
    """Case id (and image stem) -> "valid"/"test" for every held-out real image of CROOT."""
    held: dict[str, str] = {}
    for stem, entry in split_records(croot).items():
        split = entry.get("split")
        if split in ("valid", "test"):
            held[str(entry.get("case_id") or stem)] = split
            held[f"image:{stem}"] = split
    return held


def check_derived_from_train(row: dict, held_out: dict[str, str], where: str) -> None:
    """A synthetic image built from a valid/test case (its background, mask or reference)
    would carry that patient into training: refused, naming the row and the case."""
    if not held_out:
        return
    cases = [str(row.get("case_id") or ""), *(str(c) for c in row.get("source_cases") or [])]
    for case in cases:
        if case and case in held_out:
            raise SyntheticLeakError(
                where,
                f"synthetic image {row.get('id', row['file_name'])!r} derives from case "
                f"{case!r}, which is in {held_out[case]}/ (sources must be train cases)",
            )
    reference = row.get("reference")
    if reference:
        split = held_out.get(f"image:{Path(str(reference)).stem}")
        if split:
            raise SyntheticLeakError(
                where,
                f"synthetic image {row.get('id', row['file_name'])!r} uses reference "
                f"{reference!r}, a {split}/ image (references must be train images)",
            )


def matched_counts(
    real_train: list[ImageItem],
    pools: list[list[ImageItem]],
    classes: tuple[int, ...],
    ratio: float,
    per_class_count: int = -1,
) -> dict[int, int]:
    """Per-class number of extra images, capped so that every pool can supply it."""
    real = class_counts(real_train)
    counts = {0: 0, 1: 0}
    for label in classes:
        wanted = per_class_count if per_class_count >= 0 else round(ratio * real[label])
        available = [sum(item.label == label for item in pool) for pool in pools]
        counts[label] = min([wanted, *available])
    return counts


def select(pool: list[ImageItem], counts: dict[int, int], seed: int) -> list[ImageItem]:
    """Draw `counts[c]` images of class c without replacement, reproducibly."""
    rng = random.Random(seed)
    chosen = []
    for label, count in sorted(counts.items()):
        candidates = [item for item in pool if item.label == label]
        if count > len(candidates):
            raise ValueError(f"class {label}: {count} wanted, only {len(candidates)} available")
        chosen += rng.sample(candidates, count)
    return chosen


def duplicate_real(
    real_train: list[ImageItem], counts: dict[int, int], seed: int
) -> list[ImageItem]:
    """Count-matched control: repeat real train images of each class, as evenly as possible."""
    rng = random.Random(seed)
    copies = []
    for label, count in sorted(counts.items()):
        candidates = [item for item in real_train if item.label == label and item.origin == "real"]
        if count and not candidates:
            raise ValueError(f"class {label}: no real train images to duplicate")
        drawn: list[ImageItem] = []
        while len(drawn) < count:
            drawn += rng.sample(candidates, min(len(candidates), count - len(drawn)))
        copies += [
            ImageItem(item.path, item.label, "train", "duplicate", item.case_id) for item in drawn
        ]
    return copies


def add_to_train(
    items: list[ImageItem], extra: list[ImageItem], split: str = "train"
) -> list[ImageItem]:
    """The only way extra images enter a split: train/ only, real valid/test stay untouched."""
    if split != "train":
        raise SyntheticLeakError(split, f"refusing to add {len(extra)} extra images to {split}/")
    for item in extra:
        if item.split != "train":
            raise SyntheticLeakError(item.path, f"extra image marked for {item.split}/")
    return list(items) + list(extra)


def manifest_is_stand_in(manifest: str | Path) -> bool:
    """True when any row says `stand_in` (borrowed real-like images, not generated ones)."""
    path = Path(manifest)
    path = path / "manifest.jsonl" if path.is_dir() else path
    with open(path, encoding="utf-8") as handle:
        return any(json.loads(line).get("stand_in") for line in handle if line.strip())
