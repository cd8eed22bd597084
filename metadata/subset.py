"""A dataset folder holding only the cases of chosen splits (the generator's training data).

The diffusion models, CLIP and MoSo must never see a validation or test case: otherwise the
synthetic images can copy the very patients the classifier is scored on. This writes ROOT with
the records of the chosen splits (by `splits.json`), hard-linking the files. Unlabelled records,
which no split names, join only when their case has no image in an excluded split.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from metadata.atomic import staging_dir
from metadata.classifier_export import link_or_copy
from metadata.records import MetadataError, metadata_path, read_metadata, resolve, write_metadata


def read_assignments(splits_file: str | os.PathLike) -> dict[str, dict]:
    path = Path(splits_file)
    try:
        return dict(json.loads(path.read_text())["assignments"])
    except FileNotFoundError:
        raise MetadataError(path, "splits file not found") from None
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise MetadataError(path, f"not a splits.json ({error!r})") from None


def write_split_subset(
    location: str | os.PathLike,
    splits_file: str | os.PathLike,
    out_root: str | os.PathLike,
    keep_splits: tuple[str, ...] = ("train",),
    include_unassigned: bool = True,
) -> Path:
    """Write OUT_ROOT atomically with the kept records; returns its metadata.jsonl."""
    meta_file = metadata_path(location)
    records = read_metadata(meta_file)
    assignments = read_assignments(splits_file)
    excluded_cases = {
        entry["case_id"] for entry in assignments.values() if entry["split"] not in keep_splits
    }
    kept = []
    for record in records:
        entry = assignments.get(record.file_name)
        if entry is not None:
            if entry["split"] in keep_splits:
                kept.append(record)
        elif include_unassigned and record.case_id not in excluded_cases:
            kept.append(record)
    if not kept:
        raise MetadataError(splits_file, f"keeps none of the records of {meta_file}")
    with staging_dir(out_root) as staging:
        written = write_metadata(staging, kept)
        for record in kept:
            for relative in (record.file_name, record.condition_FG, record.condition_BG):
                link_or_copy(resolve(meta_file, relative), (written.parent / relative).resolve())
    return metadata_path(out_root)
