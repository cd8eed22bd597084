"""Case-level splits, splits.json and the refusal to let synthetic images leave train/."""

import json

import pytest

from metadata.classifier_export import export_classifier_layout
from metadata.records import read_metadata, write_metadata
from metadata.splits import SplitConfig, SyntheticLeakError, assign_records


def test_layout_and_case_level_splits(phantom_classifier_layout, phantom_dataset):
    splits = json.loads((phantom_classifier_layout / "splits.json").read_text())
    assert set(splits["tasks"]) <= {"PTC", "FTC", "MTC"} and splits["tasks"]
    by_case: dict[str, set[str]] = {}
    for name, entry in splits["assignments"].items():
        by_case.setdefault(entry["case_id"], set()).add(entry["split"])
        for task in entry["tasks"]:
            target = "1" if entry["label"] == task else "0"
            assert (phantom_classifier_layout / task / entry["split"] / target / name).is_file()
    assert all(len(s) == 1 for s in by_case.values())
    for task in splits["tasks"]:
        for split in ("train", "valid", "test"):
            assert any((phantom_classifier_layout / task / split / "1").iterdir())


def test_splits_are_deterministic_and_stratified(phantom_dataset):
    records = read_metadata(phantom_dataset)
    first = assign_records(records, SplitConfig(seed=4))
    assert first == assign_records(records, SplitConfig(seed=4))
    assert first != assign_records(records, SplitConfig(seed=5))
    for label in {r.label for r in records}:
        cases = {r.case_id for r in records if r.label == label}
        if len(cases) >= 3:
            assert {first[r.file_name] for r in records if r.label == label} == {
                "train",
                "valid",
                "test",
            }


def with_synthetic(phantom_dataset, tmp_path, case_id):
    import shutil

    root = tmp_path / "ds"
    shutil.copytree(phantom_dataset, root)
    records = read_metadata(root)
    synthetic = read_metadata(root)[0]
    synthetic.synthetic = True
    synthetic.case_id = case_id
    synthetic.file_name = records[0].file_name
    records[0] = synthetic
    write_metadata(root, records)
    return root, synthetic


def test_synthetic_goes_to_train_and_override_elsewhere_is_refused(phantom_dataset, tmp_path):
    root, synthetic = with_synthetic(phantom_dataset, tmp_path, "synthetic_000")
    path = export_classifier_layout(root, tmp_path / "cls")
    assignments = json.loads(path.read_text())["assignments"]
    assert assignments[synthetic.file_name]["split"] == "train"
    override = {name: entry["split"] for name, entry in assignments.items()}
    override[synthetic.file_name] = "test"
    with pytest.raises(SyntheticLeakError, match="only enter train"):
        export_classifier_layout(root, tmp_path / "cls2", split_override=override)
    assert not (tmp_path / "cls2").exists()


def test_synthetic_from_a_held_out_case_is_refused(phantom_dataset, tmp_path):
    records = read_metadata(phantom_dataset)
    assignments = assign_records(records, SplitConfig())
    test_case = next(r.case_id for r in records if assignments[r.file_name] == "test")
    root, _ = with_synthetic(phantom_dataset, tmp_path, test_case)
    with pytest.raises(SyntheticLeakError, match="held-out case"):
        export_classifier_layout(root, tmp_path / "cls")
