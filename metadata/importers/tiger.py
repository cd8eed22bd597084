"""An existing Tiger-style folder (the paper's layout) brought into ours.

Its metadata.jsonl may name conditions `condition_FG`/`condition_BG` or `condition_nd`/
`condition_bg`. Paths are looked up relative to the metadata file's folder, then the dataset
folder, then the folder above it (the authors' sample writes "training data/condition_FG/x.png"),
and must lie inside the dataset folder. A missing file is reported per row with the files of the
same name and another extension (the authors' ".pngg" typo, a ".jpg" name for a ".png" mask).
The user's `text_nd` is kept verbatim (the class label is read from its words, and its words are
declared in the dataset's vocabulary.json); `text_bg` keeps the user's words and gets the three
measured numbers in front (our three words when the user gave none).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np

from metadata.atomic import save_png, staging_dir, write_json
from metadata.background import BackgroundStats, compose_text_bg, measure_background
from metadata.builder import DATASET_FORMAT, DATASET_MARKER, sha256
from metadata.classifier_export import link_or_copy
from metadata.importers.images import read_grey, read_mask
from metadata.records import (
    BG_DIR,
    FG_DIR,
    IMAGE_DIR,
    METADATA_FILE,
    MetadataError,
    MetadataRecord,
    dataset_root,
    metadata_path,
    read_metadata,
    resolve,
    write_metadata,
)
from metadata.validate import inside, read_dataset
from metadata.vocabulary import (
    BENIGN,
    CLASS_LABELS,
    MALIGNANT,
    SUBTYPE_WORDS,
    UNLABELLED,
    VOCABULARY_FILE,
    DatasetVocabulary,
    split_phrases,
)

NUMBER = re.compile(r"^\s*-?\d+(?:\.\d+)?\s*$")


def label_from_text(text_nd: str) -> str:
    words = text_nd.lower()
    for subtype, word in SUBTYPE_WORDS.items():
        if word in words:
            return subtype
    if MALIGNANT in words:
        return MALIGNANT
    if BENIGN in words:
        return BENIGN
    return UNLABELLED


def complete_text_bg(text_bg: str, image: np.ndarray, mask: np.ndarray) -> tuple[str, list[float]]:
    """The three numbers (given, else measured) first, then the user's own words (ours when the
    user gave none)."""
    parts = [part.strip() for part in text_bg.split(",") if part.strip()]
    numbers = [float(part) for part in parts if NUMBER.match(part)]
    words = [part for part in parts if not NUMBER.match(part)]
    if len(numbers) >= 3:
        stats = BackgroundStats(*numbers[:3])
    else:
        stats = measure_background(image, mask)
    if not words:
        return compose_text_bg(stats), stats.as_list()
    numbers_text = ", ".join(f"{value:.6f}" for value in stats.as_list())
    return f"{numbers_text}, {', '.join(words)}", stats.as_list()


def find_file(meta_file: Path, root: Path, relative: str, role: str) -> Path:
    """The file a record names: relative to init_image/, ROOT or ROOT's parent, inside ROOT."""
    if Path(relative).is_absolute():
        raise ValueError(f"{role} path {relative!r} is absolute (must lie inside {root})")
    candidates = [(base / relative).resolve() for base in (meta_file.parent, root, root.parent)]
    allowed = [path for path in candidates if inside(path, root)]
    if not allowed:
        raise ValueError(f"{role} path {relative!r} escapes {root}")
    for path in allowed:
        if path.is_file():
            return path
    near = sorted(
        str(other.relative_to(root))
        for path in allowed
        if path.parent.is_dir()
        for other in path.parent.iterdir()
        if other.stem == path.stem and other.is_file()
    )
    hint = f"; same name, other extension: {', '.join(near)}" if near else ""
    looked = ", ".join(str(path.relative_to(root)) for path in allowed)
    raise ValueError(f"{role} file {relative!r} not found (looked for {looked} in {root}){hint}")


def declared_vocabulary(records: list[MetadataRecord]) -> DatasetVocabulary:
    """The built-in vocabulary plus the phrases of the user's own text_nd."""
    builtin = DatasetVocabulary.builtin()
    phrases = {phrase for record in records for phrase in split_phrases(record.text_nd)}
    return DatasetVocabulary(builtin.labels, builtin.phrases | phrases)


def is_built_dataset(root: Path) -> bool:
    """A folder our builder finished, its records unedited since: nothing to convert."""
    try:
        marker = json.loads((root / DATASET_MARKER).read_text("utf-8"))
        meta_file = root / IMAGE_DIR / METADATA_FILE
        return (
            isinstance(marker, dict)
            and marker.get("format") == DATASET_FORMAT
            and marker.get("metadata_sha256") == sha256(meta_file)
        )
    except (OSError, json.JSONDecodeError):
        return False


def adopt_dataset(root: Path, out_root: str | os.PathLike) -> Path:
    """Check a finished dataset (every check every stage makes) and hard-link it into place:
    seconds, where converting it again would decode and measure every frame."""
    meta_file, records = read_dataset(root)
    with staging_dir(out_root) as staging:
        for side in sorted(root.iterdir()):
            if side.is_file() and side.suffix in (".json", ".png"):
                link_or_copy(side, staging / side.name)
        written = write_metadata(staging, records)
        for record in records:
            for relative in (record.file_name, record.condition_FG, record.condition_BG):
                link_or_copy(resolve(meta_file, relative), (written.parent / relative).resolve())
    return Path(out_root) / IMAGE_DIR / METADATA_FILE


def import_tiger_folder(
    location: str | os.PathLike, out_root: str | os.PathLike, skip_bad: bool = False
) -> Path:
    meta_file = metadata_path(location)
    root = dataset_root(meta_file).resolve()
    if is_built_dataset(root):
        return adopt_dataset(root, out_root)
    source_records = read_metadata(meta_file)
    skipped: list[dict[str, str]] = []
    records: list[MetadataRecord] = []
    with staging_dir(out_root) as staging:
        for line_no, record in enumerate(source_records, start=1):
            try:
                if record.label and record.label not in CLASS_LABELS:
                    raise ValueError(f"label {record.label!r} is not one of {CLASS_LABELS}")
                image_path = find_file(meta_file, root, record.file_name, "image")
                fg_path = find_file(meta_file, root, record.condition_FG, "condition_FG")
                bg_path = find_file(meta_file, root, record.condition_BG, "condition_BG")
                image = read_grey(image_path)
                mask = read_mask(fg_path)
                background = read_grey(bg_path)
                for path, other in ((fg_path, mask), (bg_path, background)):
                    if other.shape != image.shape:
                        raise ValueError(
                            f"{path}: size {other.shape} differs from image {image.shape}"
                        )
                if not mask.any():
                    raise ValueError(f"{fg_path}: empty mask")
                text_bg, stats = complete_text_bg(record.text_bg, image, mask)
            except ValueError as error:
                if not skip_bad:
                    raise MetadataError(meta_file, str(error), line_no) from None
                skipped.append({"where": f"{meta_file}:{line_no}", "problem": str(error)})
                continue
            name = f"{image_path.stem}.png"
            save_png(staging / IMAGE_DIR / name, image)
            save_png(
                staging / FG_DIR / name, np.repeat((mask * 255).astype(np.uint8)[..., None], 3, -1)
            )
            (staging / BG_DIR).mkdir(parents=True, exist_ok=True)
            if bg_path.suffix.lower() == ".png":
                shutil.copyfile(bg_path, staging / BG_DIR / name)
            else:
                save_png(staging / BG_DIR / name, background)
            records.append(
                MetadataRecord(
                    file_name=name,
                    condition_FG=f"../{FG_DIR}/{name}",
                    condition_BG=f"../{BG_DIR}/{name}",
                    text_nd=record.text_nd,
                    text_bg=text_bg,
                    case_id=record.case_id,
                    label=record.label or label_from_text(record.text_nd),
                    source="tiger",
                    synthetic=record.synthetic,
                    attributes=record.attributes,
                    bg_stats=stats,
                )
            )
        if not records:
            report = "".join(f"\n  {s['where']}: {s['problem']}" for s in skipped)
            raise MetadataError(meta_file, f"no usable records{report}")
        write_metadata(staging, records)
        write_json(staging / VOCABULARY_FILE, declared_vocabulary(records).to_json())
        if skip_bad:
            write_json(staging / "skipped.json", {"skipped": skipped})
    return Path(out_root) / IMAGE_DIR / METADATA_FILE
