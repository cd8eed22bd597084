"""The generator's train-only dataset holds no validation or test case."""

from __future__ import annotations

import json

import pytest

from metadata.records import MetadataError, read_metadata
from metadata.subset import write_split_subset
from metadata.validate import validate_dataset


def test_train_subset_keeps_only_train_cases(phantom_dataset, phantom_classifier_layout, tmp_path):
    splits_file = phantom_classifier_layout / "splits.json"
    assignments = json.loads(splits_file.read_text())["assignments"]
    out = tmp_path / "train_only"
    write_split_subset(phantom_dataset, splits_file, out)
    kept = read_metadata(out)
    train_names = {name for name, entry in assignments.items() if entry["split"] == "train"}
    assert {record.file_name for record in kept} == train_names
    held_out_cases = {e["case_id"] for e in assignments.values() if e["split"] != "train"}
    assert not held_out_cases & {record.case_id for record in kept}
    assert len(validate_dataset(out).records) == len(kept)


def test_subset_refuses_a_foreign_splits_file(phantom_dataset, tmp_path):
    foreign = tmp_path / "splits.json"
    foreign.write_text(
        json.dumps({"assignments": {"nope.png": {"case_id": "x", "split": "train"}}})
    )
    with pytest.raises(MetadataError, match="names none of the images"):
        write_split_subset(phantom_dataset, foreign, tmp_path / "out", include_unassigned=False)
    assert not (tmp_path / "out").exists()
