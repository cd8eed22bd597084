"""Export a dataset folder to the classifier layout CROOT/SUBTYPE/{train,valid,test}/{0,1}/.

One binary task per positive class of the dataset's label set present (1 = that class, 0 = the
negative class: benign for thyroid), all tasks sharing one case-level split so a negative patient
is in the same split for every task. Frames of a lesion-free class are split too (so only train
cases reach the generators) but enter no task unless the label set declares that class negative
or positive. `splits.json`
records every assignment. Synthetic records only ever enter train/: a split file that puts one
elsewhere, or a synthetic image derived from a validation/test case, is refused.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from metadata.atomic import staging_dir, write_json
from metadata.labelset import LabelSet, read_labelset
from metadata.records import MetadataRecord, dataset_root, resolve
from metadata.splits import (
    SplitConfig,
    SyntheticLeakError,
    assign_records,
    check_no_synthetic_outside_train,
)
from metadata.validate import read_dataset
from metadata.vocabulary import UNLABELLED

SPLITS_FILE = "splits.json"


def task_labels(records: list[MetadataRecord], labels: LabelSet | None = None) -> list[str]:
    """The positive classes with at least one real image, in the label set's order."""
    labels = labels or LabelSet.thyroid()
    present = {record.label for record in records if not record.synthetic}
    return [label for label in labels.positives if label in present]


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
    labels = read_labelset(dataset_root(meta_file))
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
    tasks = task_labels(records, labels)
    if not tasks:
        raise ValueError(
            f"{meta_file}: no image of a positive class {list(labels.positives)} to build a "
            "classifier task for"
        )
    assignments = {}
    with staging_dir(out_root) as staging:
        for record in records:
            split = splits[record.file_name]
            source = resolve(meta_file, record.file_name)
            targets = [t for t in tasks if record.label in (t, labels.negative)]
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
                "labels": labels.to_json(),
                "assignments": assignments,
            },
        )
    return Path(out_root) / SPLITS_FILE
