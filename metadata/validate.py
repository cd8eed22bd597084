"""Check a dataset folder before any stage trusts it: the one reader every stage uses.

Problems found: malformed JSON, missing keys, paths escaping the dataset folder (relative or
absolute), missing, truncated or non-image files, image/condition size mismatch, empty masks,
duplicate names, labels and text_nd words outside the dataset's vocabulary. Without `skip_bad`
the first problem raises MetadataError (file and line named); with it, bad records are left out
and a report says which and why. `read_dataset` is what trainers, CLIP, MoSo, generation and the
exporter call, so they read exactly the records `validate` accepts, before any work starts.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from metadata.atomic import write_json
from metadata.labelset import LABELS_FILE, read_labelset
from metadata.records import (
    MetadataError,
    MetadataRecord,
    dataset_root,
    metadata_path,
    parse_line,
    resolve,
)
from metadata.vocabulary import VOCABULARY_FILE, DatasetVocabulary

MASK_THRESHOLD = 127
SKIPPED_FILE = "skipped_records.json"  # a stage's report of the records --skip-bad left out
LOGGER = logging.getLogger(__name__)


@dataclass
class ValidationReport:
    meta_file: Path
    records: list[MetadataRecord] = field(default_factory=list)
    problems: list[dict[str, object]] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "metadata": str(self.meta_file),
            "valid": len(self.records),
            "skipped": len(self.problems),
            "problems": self.problems,
        }


def open_checked(path: Path, meta_file: Path, line_no: int, role: str) -> Image.Image:
    if not path.is_file():
        raise MetadataError(meta_file, f"{role} file {path} not found", line_no)
    try:
        with Image.open(path) as picture:
            picture.load()
            return picture.copy()
    except (UnidentifiedImageError, OSError) as error:
        raise MetadataError(
            meta_file, f"{role} file {path} is unreadable ({error})", line_no
        ) from None


def inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


def load_vocabulary(root: Path) -> DatasetVocabulary:
    """The labels of the dataset's label set (ROOT/labels.json; thyroid by default) and the
    built-in words plus the label set's, extended by ROOT/vocabulary.json when there is one."""
    try:
        labelset = read_labelset(root)
    except ValueError as error:
        raise MetadataError(root / LABELS_FILE, str(error)) from None
    builtin = DatasetVocabulary.builtin()
    labels = set(labelset.labels)  # thyroid's are the built-in labels
    phrases = set(builtin.phrases) | labelset.phrases()
    path = root / VOCABULARY_FILE
    if path.is_file():
        try:
            data = json.loads(path.read_text("utf-8"))
            labels |= {str(v) for v in data.get("labels", [])}
            phrases |= {str(v) for v in data.get("text_nd_phrases", [])}
        except (json.JSONDecodeError, AttributeError, TypeError) as error:
            raise MetadataError(path, f"not a vocabulary file ({error})") from None
    return DatasetVocabulary(frozenset(labels), frozenset(phrases), labelset.lesion_free)


def check_mask(
    picture: Image.Image,
    record: MetadataRecord,
    path: Path,
    meta_file: Path,
    line_no: int,
    vocabulary: DatasetVocabulary | None,
) -> None:
    """A lesion class needs a lesion; the lesion-free class (and only it) has an empty mask."""
    empty = not (np.asarray(picture.convert("L")) > MASK_THRESHOLD).any()
    lesion_free = vocabulary is not None and record.label == vocabulary.lesion_free
    if empty and not lesion_free:
        raise MetadataError(meta_file, f"condition_FG {path} is an empty mask", line_no)
    if lesion_free and not empty:
        raise MetadataError(
            meta_file, f"condition_FG {path}: class {record.label!r} is lesion-free", line_no
        )


def check_record(
    record: MetadataRecord,
    meta_file: Path,
    root: Path,
    line_no: int,
    vocabulary: DatasetVocabulary | None = None,
) -> None:
    problems = (vocabulary or DatasetVocabulary.builtin()).problems(record.label, record.text_nd)
    if problems:
        raise MetadataError(meta_file, "; ".join(problems), line_no)
    sizes = {}
    for role, relative in (
        ("image", record.file_name),
        ("condition_FG", record.condition_FG),
        ("condition_BG", record.condition_BG),
    ):
        path = resolve(meta_file, relative)
        if not inside(path, root):
            raise MetadataError(meta_file, f"{role} path {relative!r} escapes {root}", line_no)
        picture = open_checked(path, meta_file, line_no, role)
        sizes[role] = picture.size
        if role == "condition_FG":
            check_mask(picture, record, path, meta_file, line_no, vocabulary)
    if len(set(sizes.values())) != 1:
        detail = ", ".join(f"{role} {w}x{h}" for role, (w, h) in sizes.items())
        raise MetadataError(meta_file, f"size mismatch: {detail}", line_no)


def validate_dataset(
    location: str | os.PathLike,
    skip_bad: bool = False,
    report_path: str | os.PathLike | None = None,
) -> ValidationReport:
    meta_file = metadata_path(location)
    root = dataset_root(meta_file).resolve()
    report = ValidationReport(meta_file=meta_file)
    vocabulary = load_vocabulary(root)
    seen: dict[str, int] = {}
    with open(meta_file, encoding="utf-8") as handle:
        lines = handle.readlines()
    for line_no, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            record = parse_line(text, meta_file, line_no)
            if record.file_name in seen:
                raise MetadataError(
                    meta_file,
                    f"duplicate file_name {record.file_name!r} (line {seen[record.file_name]})",
                    line_no,
                )
            check_record(record, meta_file, root, line_no, vocabulary)
        except MetadataError as error:
            if not skip_bad:
                raise
            report.problems.append(
                {"line": line_no, "problem": error.problem, "text": text.strip()[:200]}
            )
            continue
        seen[record.file_name] = line_no
        report.records.append(record)
    if not report.records:
        raise MetadataError(meta_file, "no valid records")
    if skip_bad and report_path is not None:
        write_json(report_path, report.to_json())
    return report


def read_dataset(
    location: str | os.PathLike,
    skip_bad: bool = False,
    report_path: str | os.PathLike | None = None,
) -> tuple[Path, list[MetadataRecord]]:
    """(metadata file, records) after every check `validate` makes; what each stage reads."""
    report = validate_dataset(location, skip_bad=skip_bad, report_path=report_path)
    if report.problems:
        for problem in report.problems:
            LOGGER.warning(
                "%s:%s skipped: %s", report.meta_file, problem["line"], problem["problem"]
            )
    return report.meta_file, report.records


def main_summary(report: ValidationReport) -> str:
    return json.dumps({k: v for k, v in report.to_json().items() if k != "problems"})
