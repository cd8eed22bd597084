"""The real images generation may draw on: the train split of a dataset, never valid or test.

The split is the classifier's own `splits.json` when given, otherwise the same case-level split
the classifier exporter computes (`metadata.splits.assign_records` over the labelled records,
default fractions and seed), so a reference, mask or background never comes from a case the
classifier is validated or tested on.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from metadata.records import MetadataError, MetadataRecord, metadata_path, read_metadata, resolve
from metadata.splits import SplitConfig, assign_records
from metadata.vocabulary import UNLABELLED


@dataclass
class TrainSource:
    """Train-split records of a dataset, with the metadata file their paths are relative to."""

    meta_file: Path
    records: list[MetadataRecord]
    split_origin: str

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


def load_train_source(
    dataset: str | os.PathLike,
    splits_file: str | os.PathLike | None = None,
    split_config: SplitConfig | None = None,
) -> TrainSource:
    """Real, labelled records of the train split (unlabelled ones are never in a split)."""
    meta_file = metadata_path(dataset)
    records = [
        r for r in read_metadata(meta_file) if not r.synthetic and r.label and r.label != UNLABELLED
    ]
    if not records:
        raise MetadataError(meta_file, "no labelled real records to draw on")
    if splits_file:
        splits = read_splits_file(splits_file)
        known = [r for r in records if r.file_name in splits]
        if not known:
            raise MetadataError(
                Path(splits_file), f"names none of the images of {meta_file}: wrong splits.json?"
            )
        origin = str(Path(splits_file).resolve())
    else:
        splits = assign_records(records, split_config or SplitConfig())
        origin = f"metadata.splits.assign_records({split_config or SplitConfig()!r})"
    train = [r for r in records if splits.get(r.file_name) == "train"]
    if not train:
        raise MetadataError(meta_file, "the train split is empty")
    return TrainSource(meta_file=meta_file, records=train, split_origin=origin)
