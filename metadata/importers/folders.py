"""The class-folder layout most public ultrasound sets ship in (e.g. breast ultrasound):

    ROOT/<class>/NAME.png             the frame (.png, .jpg, .jpeg, .bmp, .tif)
    ROOT/<class>/NAME_mask.png        its lesion mask (white lesion on black)
    ROOT/<class>/NAME_mask_1.png ...  further lesions of the same frame, one mask each

Each folder name is a class. Which class is the negative one, which are the rare positives and
which has no lesion come from a label-set file (`--labels`, see metadata.labelset) or from
`--negative` / `--lesion-free` / `--rare` (every other folder is a positive class). Frames of the
lesion-free class may have an empty mask or none. The case id is the frame's name (the layout
names no patients); near-identical frames of different names are merged into one case by the
builder, and refused when their folders disagree.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from metadata.builder import Sample, SkippedSample, build_dataset
from metadata.importers.images import read_grey, read_mask
from metadata.labelset import LabelSet, load_labelset_file
from metadata.vocabulary import NoduleAttributes

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MASK_NAME = re.compile(r"^(?P<stem>.+)_mask(?:_(?P<index>\d+))?$", re.IGNORECASE)


def safe_stem(text: str) -> str:
    """'benign (12)' -> 'benign_12': names become file names and case ids."""
    return re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9_.-]", "_", text)).strip("_.")


def class_folders(root: Path) -> list[Path]:
    if not root.is_dir():
        raise ValueError(f"{root}: not a folder")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise ValueError(f"{root}: no class folders (expected ROOT/<class>/NAME.png)")
    return folders


def frames_of(folder: Path) -> list[tuple[Path, list[Path]]]:
    """(frame, its masks in lesion order) for every frame of one class folder."""
    frames: dict[str, Path] = {}
    masks: dict[str, list[tuple[int, Path]]] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        match = MASK_NAME.match(path.stem)
        if match:
            index = int(match["index"]) if match["index"] else 0
            masks.setdefault(match["stem"], []).append((index, path))
        else:
            frames[path.stem] = path
    orphans = sorted(set(masks) - set(frames))
    if orphans:
        raise ValueError(f"{folder}: mask(s) without a frame: {', '.join(orphans[:5])}")
    return [(frames[stem], [p for _, p in sorted(masks.get(stem, []))]) for stem in sorted(frames)]


def labelset_for(
    root: Path,
    labels_file: Path | None,
    negative: str | None,
    lesion_free: str | None,
    rare: list[str] | None,
) -> LabelSet:
    names = [folder.name for folder in class_folders(root)]
    if labels_file is not None:
        labels = load_labelset_file(labels_file)
    elif (root / "labels.json").is_file():
        labels = load_labelset_file(root / "labels.json")
    else:
        if negative is None:
            raise ValueError(
                f"{root}: which class is negative? Pass --negative (one of {names}) and, if a "
                "class has no lesions, --lesion-free; or a label-set file with --labels"
            )
        positives = tuple(n for n in names if n not in (negative, lesion_free))
        labels = LabelSet(
            negative=negative,
            positives=positives,
            rare=tuple(rare) if rare else positives,
            lesion_free=lesion_free,
            words={},
        )
    undeclared = [name for name in names if name not in labels.classes]
    if undeclared:
        raise ValueError(
            f"{root}: folder(s) {undeclared} are not classes of the label set "
            f"{list(labels.classes)}"
        )
    return labels


def folder_samples(root: Path, labels: LabelSet) -> Iterator[Sample | SkippedSample]:
    for folder in class_folders(root):
        label = folder.name
        for frame, mask_paths in frames_of(folder):
            try:
                image = read_grey(frame)
                lesions = [read_mask(path) for path in mask_paths]
                for path, lesion in zip(mask_paths, lesions):
                    if lesion.shape != image.shape:
                        raise ValueError(f"{path}: size {lesion.shape} differs from {image.shape}")
                if not mask_paths and label != labels.lesion_free:
                    raise ValueError(f"{frame}: no mask file {frame.stem}_mask.png")
                lesions = [lesion for lesion in lesions if lesion.any()]
                union = np.logical_or.reduce(lesions) if lesions else np.zeros(image.shape, bool)
                attributes = NoduleAttributes(label=label)
            except ValueError as error:
                yield SkippedSample(str(frame), str(error))
                continue
            named = frame.stem.lower().startswith(label.lower())  # "benign (12)" names its class
            stem = safe_stem(frame.stem if named else f"{label}_{frame.stem}")
            yield Sample(
                stem=stem,
                image=image,
                mask=union,
                attributes=attributes,
                case_id=stem,
                source="folders",
                extra={"original": str(frame.relative_to(root)), "n_lesions": len(lesions)},
                lesions=lesions,
            )


def count_frames(root: Path) -> int:
    return sum(len(frames_of(folder)) for folder in class_folders(root))


def import_folders(
    root: str | os.PathLike,
    out_root: str | os.PathLike,
    labels_file: str | os.PathLike | None = None,
    negative: str | None = None,
    lesion_free: str | None = None,
    rare: list[str] | None = None,
    skip_bad: bool = False,
    drop_conflicts: bool = False,
    workers: int | None = None,
) -> Path:
    root = Path(root)
    labels = labelset_for(
        root, Path(labels_file) if labels_file else None, negative, lesion_free, rare
    )
    return build_dataset(
        folder_samples(root, labels),
        out_root,
        skip_bad=skip_bad,
        labels=labels,
        drop_conflicts=drop_conflicts,
        workers=workers,
        total=count_frames(root),
    )
