"""An existing Tiger-style folder (the paper's layout) brought into ours.

Its metadata.jsonl may name conditions `condition_FG`/`condition_BG` or `condition_nd`/
`condition_bg`, and its `text_bg` may be numbers ("145.8, 51.0, 2.09"), words, or both. The
user's `text_nd` is kept verbatim (the class label is read from its words); `text_bg` is
completed so it always holds the three numbers followed by the three words.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np

from metadata.atomic import save_png, staging_dir, write_json
from metadata.background import BackgroundStats, compose_text_bg, measure_background
from metadata.importers.images import read_grey, read_mask
from metadata.records import (
    BG_DIR,
    FG_DIR,
    IMAGE_DIR,
    METADATA_FILE,
    MetadataError,
    MetadataRecord,
    metadata_path,
    read_metadata,
    resolve,
    write_metadata,
)
from metadata.vocabulary import SUBTYPE_WORDS

NUMBER = re.compile(r"^\s*-?\d+(?:\.\d+)?\s*$")


def label_from_text(text_nd: str) -> str:
    words = text_nd.lower()
    for subtype, word in SUBTYPE_WORDS.items():
        if word in words:
            return subtype
    if "malignant" in words:
        return "malignant"
    if "benign" in words:
        return "benign"
    return "unlabelled"


def complete_text_bg(text_bg: str, image: np.ndarray, mask: np.ndarray) -> tuple[str, list[float]]:
    parts = [part.strip() for part in text_bg.split(",") if part.strip()]
    numbers = [float(part) for part in parts if NUMBER.match(part)]
    if len(numbers) >= 3:
        stats = BackgroundStats(*numbers[:3])
    else:
        stats = measure_background(image, mask)
    return compose_text_bg(stats), stats.as_list()


def import_tiger_folder(
    location: str | os.PathLike, out_root: str | os.PathLike, skip_bad: bool = False
) -> Path:
    meta_file = metadata_path(location)
    source_records = read_metadata(meta_file)
    skipped: list[dict[str, str]] = []
    records: list[MetadataRecord] = []
    with staging_dir(out_root) as staging:
        for line_no, record in enumerate(source_records, start=1):
            try:
                image_path = resolve(meta_file, record.file_name)
                fg_path = resolve(meta_file, record.condition_FG)
                bg_path = resolve(meta_file, record.condition_BG)
                image = read_grey(image_path)
                mask = read_mask(fg_path)
                read_grey(bg_path)
                if image.shape != mask.shape:
                    raise ValueError(
                        f"{fg_path}: size {mask.shape} differs from image {image.shape}"
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
                save_png(staging / BG_DIR / name, read_grey(bg_path))
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
            raise MetadataError(meta_file, "no usable records")
        write_metadata(staging, records)
        if skip_bad:
            write_json(staging / "skipped.json", {"skipped": skipped})
    return Path(out_root) / IMAGE_DIR / METADATA_FILE
