"""One patient filed under two case ids is merged before any split (metadata.near_duplicates)."""

from __future__ import annotations

import json

import numpy as np

from metadata.builder import DUPLICATES_REPORT, Sample, build_dataset
from metadata.importers.phantom import build_phantom_dataset
from metadata.near_duplicates import find_duplicate_cases, thumbnail_vector
from metadata.records import read_metadata
from metadata.splits import SplitConfig, assign_cases
from metadata.vocabulary import NoduleAttributes


def frame(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(40, 200, size=(64, 64)).astype(np.uint8)


def test_copies_are_grouped_transitively_and_independent_frames_are_not():
    copy = frame(1).astype(np.int16) + np.random.default_rng(9).integers(-3, 4, (64, 64))
    images = [frame(1), np.clip(copy, 0, 255), frame(1), frame(2), frame(3)]
    vectors = np.stack([thumbnail_vector(image) for image in images])
    cases = ["c9", "c1", "c5", "c5", "c7"]  # c9~c1 and c1~c5 via copies of frame 1
    assert find_duplicate_cases(cases, vectors).groups == [["c1", "c5", "c9"]]
    assert find_duplicate_cases(["a", "b"], vectors[3:5]).groups == []


def sample(stem: str, case: str, image: np.ndarray, label: str) -> Sample:
    mask = np.zeros((64, 64), bool)
    mask[20:40, 24:44] = True
    return Sample(stem, image, mask, NoduleAttributes(label=label), case, "test")


def test_builder_gives_a_duplicated_patient_one_case_and_keeps_the_listed_id(tmp_path):
    samples = [
        sample("a1", "case_a", frame(1), "benign"),
        sample("b1", "case_b", frame(1), "benign"),  # the same frame under another id
        sample("c1", "case_c", frame(2), "benign"),
        sample("d1", "case_d", frame(3), "PTC"),
    ]
    meta = build_dataset(samples, tmp_path / "data")
    records = {r.stem: r for r in read_metadata(meta)}
    assert records["a1"].case_id == records["b1"].case_id == "case_a"
    assert records["b1"].attributes["listed_case_id"] == "case_b"
    assert records["c1"].case_id == "case_c" and "listed_case_id" not in records["c1"].attributes
    report = json.loads((tmp_path / "data" / DUPLICATES_REPORT).read_text())
    assert report["groups"] == [["case_a", "case_b"]]
    split = assign_cases(list(records.values()), SplitConfig(0.3, 0.3))
    assert "case_b" not in split and split["case_a"] in ("train", "valid", "test")


def test_unlabelled_frame_takes_its_cases_label_in_the_split(tmp_path):
    samples = [
        sample("a1", "case_a", frame(1), "FTC"),
        sample("b1", "case_b", frame(1), "unlabelled"),
        sample("c1", "case_c", frame(2), "benign"),
    ]
    records = read_metadata(build_dataset(samples, tmp_path / "data"))
    assert set(assign_cases(records, SplitConfig(0.3, 0.3))) == {"case_a", "case_c"}


def test_phantom_cases_are_never_merged(tmp_path):
    build_phantom_dataset(tmp_path / "phantom", n_images=60, size=64, seed=3)
    assert json.loads((tmp_path / "phantom" / DUPLICATES_REPORT).read_text())["groups"] == []
