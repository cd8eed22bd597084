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

from metadata.atomic import staging_dir, write_json
from metadata.classifier_export import link_or_copy
from metadata.labelset import LABELS_FILE
from metadata.records import (
    MetadataError,
    MetadataRecord,
    dataset_root,
    metadata_path,
    resolve,
    write_metadata,
)
from metadata.validate import read_dataset
from metadata.vocabulary import VOCABULARY_FILE

SUBSET_FILE = "subset.json"  # in a subset's ROOT: which splits it keeps, from which splits.json


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
    meta_file, records = read_dataset(location)
    kept = records_in_splits(records, splits_file, keep_splits, include_unassigned, meta_file)
    with staging_dir(out_root) as staging:
        write_json(
            staging / SUBSET_FILE,
            {"splits_file": str(Path(splits_file).resolve()), "keep": sorted(keep_splits)},
        )
        written = write_metadata(staging, kept)
        for side in (LABELS_FILE, VOCABULARY_FILE):  # the words the kept records may use
            if (dataset_root(meta_file) / side).is_file():
                link_or_copy(dataset_root(meta_file) / side, staging / side)
        for record in kept:
            for relative in (record.file_name, record.condition_FG, record.condition_BG):
                link_or_copy(resolve(meta_file, relative), (written.parent / relative).resolve())
    return metadata_path(out_root)


def records_in_splits(
    records: list[MetadataRecord],
    splits_file: str | os.PathLike,
    keep_splits: tuple[str, ...],
    include_unassigned: bool,
    meta_file: Path,
) -> list[MetadataRecord]:
    """Records whose split is kept; unassigned (unlabelled) ones only when their case has no
    image in an excluded split."""
    assignments = read_assignments(splits_file)
    if not any(record.file_name in assignments for record in records):
        raise MetadataError(
            splits_file, f"names none of the images of {meta_file}: wrong splits.json?"
        )
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
    return kept


def is_train_only(meta_file: Path) -> bool:
    """True for a dataset written by `write_split_subset` keeping the train split alone."""
    marker = dataset_root(meta_file) / SUBSET_FILE
    if not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text("utf-8")).get("keep") == ["train"]
    except (json.JSONDecodeError, AttributeError):
        return False


def training_records(
    meta_file: Path,
    records: list[MetadataRecord],
    splits_file: str | os.PathLike | None,
    all_cases: bool,
    stage: str,
) -> tuple[list[MetadataRecord], str]:
    """The records a generator stage may learn from or draw on, and where that choice came
    from. Never a silent default split: the classifier's splits.json (train cases), a train-only
    subset, or every case when the user says so."""
    if splits_file:
        kept = records_in_splits(records, splits_file, ("train",), True, meta_file)
        return kept, f"train split of {Path(splits_file).resolve()}"
    if is_train_only(meta_file):
        return records, f"train-only subset {dataset_root(meta_file)}"
    if all_cases:
        return records, "every case (all_cases: valid/test patients reach the generator)"
    raise MetadataError(
        meta_file,
        f"{stage}: which cases may it use? Pass the classifier's splits (--splits "
        "CROOT/splits.json, from `metadata.cli export-classifier`) so only train cases are "
        "used, or a train-only dataset (`metadata.cli subset`), or --all_cases to use every case "
        "(valid/test patients then reach the generator and can leak into the synthetic images)",
    )
