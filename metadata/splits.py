"""Case-level (patient-level) stratified splits with a fixed seed.

All images of a case land in the same split; each class is split on its own so rare classes
still reach validation and test. Synthetic images belong to train only, always.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from metadata.records import MetadataRecord
from metadata.vocabulary import UNLABELLED

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class SplitConfig:
    valid_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0

    def __post_init__(self) -> None:
        if not (0 <= self.valid_fraction < 1 and 0 <= self.test_fraction < 1):
            raise ValueError("split fractions must be in [0, 1)")
        if self.valid_fraction + self.test_fraction >= 1:
            raise ValueError("valid + test fractions must leave room for train")


class SyntheticLeakError(ValueError):
    """Raised whenever a synthetic image would enter a validation or test set."""


def case_labels(records: list[MetadataRecord]) -> dict[str, str]:
    """One label per real case; an unlabelled frame takes its case's label (if it has one)."""
    labels: dict[str, str] = {}
    for record in sorted(records, key=lambda r: r.label in ("", UNLABELLED)):
        if record.synthetic:
            continue
        known = labels.setdefault(record.case_id, record.label)
        if known != record.label and record.label not in ("", UNLABELLED):
            raise ValueError(
                f"case {record.case_id!r} has images with different labels "
                f"({known}, {record.label})"
            )
    return labels


def split_counts(n_cases: int, config: SplitConfig) -> tuple[int, int]:
    """(valid, test) case counts; at least one each once a class has 3 or more cases."""
    n_valid = round(n_cases * config.valid_fraction)
    n_test = round(n_cases * config.test_fraction)
    if n_cases >= 3:
        n_valid = max(n_valid, 1 if config.valid_fraction > 0 else 0)
        n_test = max(n_test, 1 if config.test_fraction > 0 else 0)
    return n_valid, n_test


def assign_cases(records: list[MetadataRecord], config: SplitConfig) -> dict[str, str]:
    """Map case_id -> split for every real case."""
    by_label: dict[str, list[str]] = defaultdict(list)
    for case_id, label in sorted(case_labels(records).items()):
        by_label[label].append(case_id)
    assignment: dict[str, str] = {}
    for label in sorted(by_label):
        cases = by_label[label]
        order = np.random.default_rng([config.seed, len(label), *label.encode()]).permutation(
            len(cases)
        )
        n_valid, n_test = split_counts(len(cases), config)
        for rank, index in enumerate(order):
            split = "test" if rank < n_test else "valid" if rank < n_test + n_valid else "train"
            assignment[cases[index]] = split
    return assignment


def assign_records(records: list[MetadataRecord], config: SplitConfig) -> dict[str, str]:
    """Map file_name -> split; synthetic records go to train."""
    cases = assign_cases(records, config)
    return {
        record.file_name: "train" if record.synthetic else cases[record.case_id]
        for record in records
    }


def check_no_synthetic_outside_train(records: list[MetadataRecord], splits: dict[str, str]) -> None:
    for record in records:
        split = splits[record.file_name]
        if record.synthetic and split != "train":
            raise SyntheticLeakError(
                f"{record.file_name}: synthetic image assigned to {split!r}; "
                "synthetic images may only enter train/"
            )
