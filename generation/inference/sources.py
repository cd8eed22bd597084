"""The real images generation may draw on: the train split of a dataset, never valid or test.

The split is the classifier's own `splits.json` (or, for a train-only subset dataset, every
record), so a reference, mask or background never comes from a case the classifier is validated
or tested on. There is no default seed: see `labelled_splits`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from metadata.labelset import LabelSet, read_labelset
from metadata.records import MetadataError, MetadataRecord, dataset_root, resolve
from metadata.splits import SplitConfig, assign_records
from metadata.subset import is_train_only
from metadata.validate import read_dataset
from metadata.vocabulary import UNLABELLED


@dataclass
class TrainSource:
    """Train-split records of a dataset, with the metadata file their paths are relative to."""

    meta_file: Path
    records: list[MetadataRecord]
    split_origin: str
    labels: LabelSet = field(default_factory=LabelSet.thyroid)

    def path(self, relative: str) -> Path:
        return resolve(self.meta_file, relative)

    def image_path(self, record: MetadataRecord) -> Path:
        return self.path(record.file_name)

    def fg_path(self, record: MetadataRecord) -> Path:
        return self.path(record.condition_FG)

    def bg_path(self, record: MetadataRecord) -> Path:
        return self.path(record.condition_BG)

    def of_label(self, label: str) -> list[MetadataRecord]:
        return [r for r in self.records if r.label == label]


def read_splits_file(path: str | os.PathLike) -> dict[str, str]:
    file = Path(path)
    try:
        data = json.loads(file.read_text("utf-8"))
        return {name: str(entry["split"]) for name, entry in data["assignments"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise MetadataError(file, f"not a classifier splits.json ({error!r})") from None


def labelled_splits(
    dataset: str | os.PathLike,
    splits_file: str | os.PathLike | None = None,
    split_config: SplitConfig | None = None,
) -> tuple[Path, list[MetadataRecord], dict[str, str], str]:
    """(meta_file, real labelled records, file_name -> split, where the split came from).

    The split is the classifier's splits.json, an explicit SplitConfig (Python API), or, for a
    train-only subset (`metadata.cli subset`), train for every record. Never a silent default:
    a default seed would disagree with an export made with another one and draw valid/test
    cases as "train" sources."""
    meta_file, checked = read_dataset(dataset)
    records = [r for r in checked if not r.synthetic and r.label and r.label != UNLABELLED]
    if not records:
        raise MetadataError(meta_file, "no labelled real records to draw on")
    if splits_file:
        splits = read_splits_file(splits_file)
        if not any(r.file_name in splits for r in records):
            raise MetadataError(
                Path(splits_file), f"names none of the images of {meta_file}: wrong splits.json?"
            )
        origin = str(Path(splits_file).resolve())
    elif split_config is not None:
        splits = assign_records(records, split_config)
        origin = f"metadata.splits.assign_records({split_config!r})"
    elif is_train_only(meta_file):
        splits = {r.file_name: "train" for r in records}
        origin = f"train-only subset {meta_file}"
    else:
        raise MetadataError(
            meta_file,
            "which cases may generation draw on? Pass --splits CROOT/splits.json (the "
            "classifier's split, from `metadata.cli export-classifier`), or a train-only "
            "dataset (`metadata.cli subset`)",
        )
    return meta_file, records, splits, origin


def load_train_source(
    dataset: str | os.PathLike,
    splits_file: str | os.PathLike | None = None,
    split_config: SplitConfig | None = None,
) -> TrainSource:
    """Real, labelled records of the train split (unlabelled ones are never in a split)."""
    meta_file, records, splits, origin = labelled_splits(dataset, splits_file, split_config)
    train = [r for r in records if splits.get(r.file_name) == "train"]
    if not train:
        raise MetadataError(meta_file, "the train split is empty")
    labels = read_labelset(dataset_root(meta_file))
    return TrainSource(meta_file=meta_file, records=train, split_origin=origin, labels=labels)
