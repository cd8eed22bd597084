"""Every validation error names the file and line; --skip-bad reports instead of stopping."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from metadata.records import MetadataError, read_metadata
from metadata.validate import validate_dataset


@pytest.fixture()
def dataset_copy(phantom_dataset, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(phantom_dataset, target)
    return target


def rewrite_line(root, index, change):
    meta = root / "init_image" / "metadata.jsonl"
    lines = meta.read_text().splitlines()
    lines[index] = change(lines[index])
    meta.write_text("\n".join(lines) + "\n")
    return meta


def edit_json(key, value):
    def change(line):
        row = json.loads(line)
        if value is None:
            row.pop(key)
        else:
            row[key] = value
        return json.dumps(row)

    return change


def test_clean_dataset_validates(phantom_dataset):
    report = validate_dataset(phantom_dataset)
    assert len(report.records) == 48 and not report.problems


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda line: line[:-3], "malformed JSON"),
        (edit_json("text_nd", None), "missing key(s) text_nd"),
        (edit_json("condition_FG", "../condition_FG/nope.png"), "not found"),
        (edit_json("file_name", "../../outside.png"), "escapes"),
        (edit_json("text_bg", 5), "'text_bg' must be a non-empty string"),
        (lambda line: "[1, 2]", "must be a JSON object"),
    ],
)
def test_each_problem_is_named_with_file_and_line(dataset_copy, change, message):
    meta = rewrite_line(dataset_copy, 2, change)
    with pytest.raises(MetadataError) as caught:
        validate_dataset(dataset_copy)
    assert message in str(caught.value)
    assert f"{meta}:3" in str(caught.value)


def test_unreadable_size_mismatch_and_empty_mask(dataset_copy):
    records = read_metadata(dataset_copy)
    (dataset_copy / "init_image" / records[0].file_name).write_bytes(b"not a png")
    with pytest.raises(MetadataError, match=r"metadata.jsonl:1: image file .* unreadable"):
        validate_dataset(dataset_copy)
    shutil.copy(
        dataset_copy / "init_image" / records[1].file_name,
        dataset_copy / "init_image" / records[0].file_name,
    )
    bg = dataset_copy / "condition_BG" / f"{records[0].stem}.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(bg)
    with pytest.raises(
        MetadataError,
        match=r":1: size mismatch: image 64x64, condition_FG 64x64, condition_BG 32x32",
    ):
        validate_dataset(dataset_copy)
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(bg)
    fg = dataset_copy / "condition_FG" / f"{records[0].stem}.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(fg)
    with pytest.raises(MetadataError, match=r":1: condition_FG .* empty mask"):
        validate_dataset(dataset_copy)


def test_duplicate_names_are_refused(dataset_copy):
    meta = dataset_copy / "init_image" / "metadata.jsonl"
    lines = meta.read_text().splitlines()
    meta.write_text("\n".join([*lines, lines[0]]) + "\n")
    with pytest.raises(MetadataError, match=f"{len(lines) + 1}: duplicate file_name"):
        validate_dataset(dataset_copy)


def test_skip_bad_reports_what_was_skipped(dataset_copy):
    rewrite_line(dataset_copy, 0, lambda line: "{broken")
    rewrite_line(dataset_copy, 5, edit_json("condition_BG", "../condition_BG/missing.png"))
    report_path = dataset_copy / "report.json"
    report = validate_dataset(dataset_copy, skip_bad=True, report_path=report_path)
    assert len(report.records) == 46
    written = json.loads(report_path.read_text())
    assert [p["line"] for p in written["problems"]] == [1, 6]
    assert "malformed JSON" in written["problems"][0]["problem"]


def test_legacy_condition_keys_are_read(dataset_copy):
    def to_legacy(line):
        row = json.loads(line)
        row["condition_nd"] = row.pop("condition_FG")
        row["condition_bg"] = row.pop("condition_BG")
        return json.dumps(row)

    meta = dataset_copy / "init_image" / "metadata.jsonl"
    lines = [to_legacy(line) for line in meta.read_text().splitlines()]
    meta.write_text("\n".join(lines) + "\n")
    records = validate_dataset(dataset_copy).records
    assert records[0].condition_FG.startswith("../condition_FG/")
    assert records[0].condition_BG.startswith("../condition_BG/")
