"""Export a dataset folder to the classifier layout CROOT/SUBTYPE/{train,valid,test}/{0,1}/.

One binary task per non-benign class present (1 = that class, 0 = benign), all tasks sharing
one case-level split so a benign patient is in the same split for every task. `splits.json`
records every assignment. Synthetic records only ever enter train/: a split file that puts one
elsewhere, or a synthetic image derived from a validation/test case, is refused.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from metadata.atomic import staging_dir, write_json
from metadata.records import MetadataRecord, resolve
from metadata.splits import (
    SplitConfig,
    SyntheticLeakError,
    assign_records,
    check_no_synthetic_outside_train,
)
from metadata.validate import read_dataset
from metadata.vocabulary import BENIGN, UNLABELLED

SPLITS_FILE = "splits.json"


def task_labels(records: list[MetadataRecord]) -> list[str]:
    present = {record.label for record in records if not record.synthetic}
    return sorted(present - {BENIGN, UNLABELLED, ""})


def link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def load_split_override(path: str | os.PathLike) -> dict[str, str]:
    data = json.loads(Path(path).read_text())
    return {name: entry["split"] for name, entry in data["assignments"].items()}


def check_reference_leak(records: list[MetadataRecord], splits: dict[str, str]) -> None:
    held_out = {
        r.case_id for r in records if not r.synthetic and splits[r.file_name] in ("valid", "test")
    }
    for record in records:
        if record.synthetic and record.case_id in held_out:
            raise SyntheticLeakError(
                f"{record.file_name}: synthetic image derived from held-out case {record.case_id!r}"
            )


def export_classifier_layout(
    location: str | os.PathLike,
    out_root: str | os.PathLike,
    config: SplitConfig | None = None,
    split_override: dict[str, str] | None = None,
) -> Path:
    """Write CROOT atomically; returns the path of splits.json."""
    config = config or SplitConfig()
    meta_file, checked = read_dataset(location)
    records = [r for r in checked if r.label and r.label != UNLABELLED]
    splits = assign_records(records, config)
    if split_override:
        missing = [r.file_name for r in records if r.file_name not in split_override]
        if missing:
            raise ValueError(
                f"split file has no entry for {missing[0]} (and {len(missing) - 1} more)"
            )
        splits = {r.file_name: split_override[r.file_name] for r in records}
    check_no_synthetic_outside_train(records, splits)
    check_reference_leak(records, splits)
    tasks = task_labels(records)
    if not tasks:
        raise ValueError(f"{meta_file}: no non-benign class to build a classifier task for")
    assignments = {}
    with staging_dir(out_root) as staging:
        for record in records:
            split = splits[record.file_name]
            source = resolve(meta_file, record.file_name)
            targets = [t for t in tasks if record.label in (t, BENIGN)]
            for task in targets:
                target_class = "1" if record.label == task else "0"
                link_or_copy(
                    source, staging / task / split / target_class / Path(record.file_name).name
                )
            assignments[record.file_name] = {
                "case_id": record.case_id,
                "label": record.label,
                "split": split,
                "synthetic": record.synthetic,
                "tasks": targets,
            }
        write_json(
            staging / SPLITS_FILE,
            {
                "source": str(meta_file),
                "seed": config.seed,
                "valid_fraction": config.valid_fraction,
                "test_fraction": config.test_fraction,
                "tasks": tasks,
                "assignments": assignments,
            },
        )
    return Path(out_root) / SPLITS_FILE
