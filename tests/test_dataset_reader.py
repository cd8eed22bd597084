"""One dataset reader for every stage: the trainers, CLIP, MoSo and the exporter read records
through the validator's checks, so a bad record is a clear error naming file and line before any
work starts (or a skip with a report under skip_bad), never a traceback mid-run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from generation.coarse.config import CoarseConfig
from generation.coarse.data import load_coarse_dataset
from generation.coarse.train import train_coarse
from generation.filtering.clip_params import ClipConfig
from generation.filtering.clip_train import train_clip
from generation.filtering.moso_pool import build_pool
from generation.fine.data import load_fine_dataset
from metadata.classifier_export import export_classifier_layout
from metadata.records import MetadataError, read_metadata

BAD_LINE = 3  # 1-based line of the record each case breaks


def set_key(key: str, value: str):
    def change(root: Path, row: dict) -> None:
        row[key] = value

    return change


def corrupt_file(kind: str):
    def change(root: Path, row: dict) -> None:
        image = root / "init_image" / row["file_name"]
        fg = (root / "init_image" / row["condition_FG"]).resolve()
        if kind == "truncated":
            data = image.read_bytes()
            image.write_bytes(data[: len(data) // 2])
        elif kind == "not_an_image":
            image.write_bytes(b"GIF? no: plain text in a .png")
        elif kind == "size_mismatch":
            with Image.open(fg) as mask:
                mask.resize((40, 40)).save(fg)
        elif kind == "empty_mask":
            with Image.open(fg) as mask:
                size = mask.size
            Image.fromarray(np.zeros((size[1], size[0], 3), np.uint8)).save(fg)

    return change


CASES = {
    "absolute path": (set_key("file_name", "/etc/passwd"), "escapes"),
    "escaping path": (set_key("condition_BG", "../../../etc/passwd"), "escapes"),
    "missing file": (set_key("condition_FG", "../condition_FG/nope.png"), "not found"),
    "truncated png": (corrupt_file("truncated"), "unreadable"),
    "not an image": (corrupt_file("not_an_image"), "unreadable"),
    "size mismatch": (corrupt_file("size_mismatch"), "size mismatch"),
    "empty FG mask": (corrupt_file("empty_mask"), "empty mask"),
    "unknown label": (set_key("label", "thyroiditis"), "label 'thyroiditis' is not one of"),
    "unknown word": (set_key("text_nd", "malignant, follicular, glowing"), "['glowing']"),
}


@pytest.fixture(params=sorted(CASES))
def broken(request, phantom_dataset, tmp_path) -> tuple[Path, str]:
    root = tmp_path / "broken"
    shutil.copytree(phantom_dataset, root)
    meta = root / "init_image" / "metadata.jsonl"
    lines = meta.read_text().splitlines()
    row = json.loads(lines[BAD_LINE - 1])
    change, message = CASES[request.param]
    change(root, row)
    lines[BAD_LINE - 1] = json.dumps(row)
    meta.write_text("\n".join(lines) + "\n")
    return root, message


def expect_named(error: pytest.ExceptionInfo, root: Path, message: str) -> None:
    text = str(error.value)
    assert f"{root / 'init_image' / 'metadata.jsonl'}:{BAD_LINE}" in text
    assert message in text


def test_every_stage_refuses_before_work(broken, tmp_path):
    root, message = broken
    output = tmp_path / "coarse"
    config = CoarseConfig(train_data_dir=str(root), output_dir=str(output), all_cases=True)
    with pytest.raises(MetadataError) as error:
        train_coarse(config)
    expect_named(error, root, message)
    assert not list(output.glob("checkpoint-*")) and not (output / "autoencoder").exists()
    readers = {
        "fine": lambda: load_fine_dataset(root, 32),
        "clip": lambda: train_clip(root, tmp_path / "clip", ClipConfig(epochs=1)),
        "moso": lambda: build_pool(root, [], 0.2, 0),
        "export": lambda: export_classifier_layout(root, tmp_path / "croot"),
    }
    for name, read in readers.items():
        with pytest.raises(MetadataError) as error:
            read()
        expect_named(error, root, message)
        assert not (tmp_path / name).exists() or name == "clip"
    assert not (tmp_path / "clip" / "best").exists()


def test_skip_bad_leaves_the_record_out_with_a_report(broken, tmp_path):
    root, message = broken
    report = tmp_path / "skipped.json"
    dataset = load_coarse_dataset(root, 32, skip_bad=True, report_path=report)
    assert len(dataset) == len(read_metadata(root)) - 1
    problems = json.loads(report.read_text())["problems"]
    assert [p["line"] for p in problems] == [BAD_LINE] and message in problems[0]["problem"]
