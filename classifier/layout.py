"""Read the classifier layout `CROOT/<SUBTYPE>/{train,valid,test}/{0,1}/*.png` (+ splits.json).

Validation and test sets are real images only; `assert_real_only` is the guard every consumer of
those splits calls, so a synthetic image can never be scored or used for model selection.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from generation.inference.provenance import is_synthetic

SPLITS = ("train", "valid", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SPLITS_FILE = "splits.json"


class LayoutError(ValueError):
    """A problem in the classifier folder, naming the path at fault."""

    def __init__(self, path: str | Path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = str(path)


class SyntheticLeakError(LayoutError):
    """Raised whenever a synthetic image would enter a split other than train/."""


@dataclass(frozen=True)
class ImageItem:
    path: Path
    label: int  # 1 = subtype (or malignant), 0 = benign
    split: str
    origin: str = "real"  # real | synthetic | duplicate
    case_id: str = ""

    @property
    def synthetic(self) -> bool:
        return self.origin == "synthetic"


def subtype_dir(croot: str | Path, subtype: str) -> Path:
    folder = Path(croot) / subtype
    if not folder.is_dir():
        available = (
            sorted(p.name for p in Path(croot).iterdir() if p.is_dir())
            if Path(croot).is_dir()
            else []
        )
        raise LayoutError(folder, f"no such subtype folder (available: {available})")
    return folder


def split_records(croot: str | Path) -> dict[str, dict]:
    """Image stem -> its splits.json entry (case_id, split, synthetic, ...); empty without one.

    The exporter writes {"assignments": {file_name: {...}}}; other tools may write a list of
    rows with a `file_name` key, which is read too."""
    path = Path(croot) / SPLITS_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise LayoutError(path, f"malformed JSON ({error.msg})") from None
    rows: list[tuple[str, dict]] = []
    if isinstance(data, dict) and isinstance(data.get("assignments"), dict):
        rows = [(name, entry) for name, entry in data["assignments"].items()]
    else:
        lists = data.values() if isinstance(data, dict) else [data]
        for value in lists:
            if isinstance(value, list):
                rows += [
                    (r["file_name"], r) for r in value if isinstance(r, dict) and "file_name" in r
                ]
    return {Path(name).stem: entry for name, entry in rows if isinstance(entry, dict)}


def read_split(croot: str | Path, subtype: str, split: str) -> list[ImageItem]:
    """All images of one split, sorted by path so every run sees the same order."""
    if split not in SPLITS:
        raise LayoutError(split, f"unknown split (expected one of {SPLITS})")
    folder = subtype_dir(croot, subtype) / split
    if not folder.is_dir():
        raise LayoutError(folder, "missing split folder")
    records = split_records(croot)
    items = []
    for label in (0, 1):
        class_dir = folder / str(label)
        if not class_dir.is_dir():
            raise LayoutError(class_dir, "missing class folder (expected 0/ and 1/)")
        for path in sorted(class_dir.iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."):
                entry = records.get(path.stem, {})
                synthetic = bool(entry.get("synthetic")) or is_synthetic(path)
                if synthetic and split != "train":
                    raise SyntheticLeakError(
                        path,
                        f"synthetic image in {split}/ (splits.json or its tiger:provenance chunk "
                        "says synthetic): only real images are validated or tested on",
                    )
                origin = "synthetic" if synthetic else "real"
                case = str(entry.get("case_id") or path.stem)
                items.append(ImageItem(path, label, split, origin, case))
    if not items:
        raise LayoutError(folder, "no images")
    return items


def read_layout(
    croot: str | Path, subtype: str, splits: tuple[str, ...] = SPLITS
) -> dict[str, list[ImageItem]]:
    """Read the requested splits and check that no case crosses two of them."""
    layout = {split: read_split(croot, subtype, split) for split in splits}
    owner: dict[str, str] = {}
    for split, items in layout.items():
        for item in items:
            seen = owner.setdefault(item.case_id, split)
            if seen != split:
                raise LayoutError(
                    item.path, f"case {item.case_id!r} appears in both {seen}/ and {split}/"
                )
    return layout


def assert_real_only(items: list[ImageItem], split: str) -> None:
    """Validation and test sets hold real images only; anything else is refused."""
    if split == "train":
        return
    for item in items:
        if item.origin != "real" or item.split != split:
            raise SyntheticLeakError(
                item.path, f"{item.origin} image refused in {split}/ (only real {split} images)"
            )


def class_counts(items: list[ImageItem]) -> dict[int, int]:
    counts = {0: 0, 1: 0}
    for item in items:
        counts[item.label] += 1
    return counts
