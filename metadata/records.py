"""The metadata.jsonl contract: one record per training image, read and written the same way
by every stage.

Layout of a Tiger dataset folder ROOT:

    ROOT/init_image/metadata.jsonl     one JSON object per line (below)
    ROOT/init_image/<name>.png         the ultrasound frames
    ROOT/condition_FG/<name>.png       nodule mask, 3-channel, 0/255
    ROOT/condition_BG/<name>.png       background (tissue) map, grayscale

Paths inside metadata.jsonl are relative to the metadata file's folder (`init_image/`), which is
what `datasets.load_dataset("imagefolder")` expects; they must resolve inside ROOT.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from metadata.atomic import write_jsonl

REQUIRED_KEYS = ("file_name", "condition_FG", "condition_BG", "text_nd", "text_bg")
# Older Tiger folders name the conditions differently; both spellings are read.
LEGACY_KEYS = {"condition_nd": "condition_FG", "condition_bg": "condition_BG"}
IMAGE_DIR = "init_image"
FG_DIR = "condition_FG"
BG_DIR = "condition_BG"
METADATA_FILE = "metadata.jsonl"


@dataclass
class MetadataRecord:
    """One training image with its conditions, texts and provenance."""

    file_name: str
    condition_FG: str
    condition_BG: str
    text_nd: str
    text_bg: str
    case_id: str = ""
    label: str = ""
    source: str = ""
    synthetic: bool = False
    attributes: dict = field(default_factory=dict)
    bg_stats: list[float] = field(default_factory=list)

    def to_json(self) -> dict:
        row = {
            "file_name": self.file_name,
            "condition_FG": self.condition_FG,
            "condition_BG": self.condition_BG,
            "text_nd": self.text_nd,
            "text_bg": self.text_bg,
            "case_id": self.case_id,
            "label": self.label,
            "source": self.source,
            "synthetic": self.synthetic,
            "attributes": self.attributes,
            "bg_stats": self.bg_stats,
        }
        return row

    @property
    def stem(self) -> str:
        return Path(self.file_name).stem


class MetadataError(ValueError):
    """A problem in a dataset folder, always naming the file (and line) at fault."""

    def __init__(self, path: str | os.PathLike, problem: str, line: int | None = None):
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")
        self.path = str(path)
        self.line = line
        self.problem = problem


def metadata_path(location: str | os.PathLike) -> Path:
    """Accept ROOT, ROOT/init_image or the metadata.jsonl itself."""
    path = Path(location)
    if path.is_file():
        return path
    for candidate in (path / METADATA_FILE, path / IMAGE_DIR / METADATA_FILE):
        if candidate.is_file():
            return candidate
    raise MetadataError(path, f"no {METADATA_FILE} found here or in {IMAGE_DIR}/")


def dataset_root(meta_file: Path) -> Path:
    """ROOT is the parent of init_image/ (or the metadata file's own folder otherwise)."""
    folder = meta_file.parent
    return folder.parent if folder.name == IMAGE_DIR else folder


def parse_line(text: str, meta_file: Path, line_no: int) -> MetadataRecord:
    try:
        row = json.loads(text)
    except json.JSONDecodeError as error:
        raise MetadataError(meta_file, f"malformed JSON ({error.msg})", line_no) from None
    if not isinstance(row, dict):
        raise MetadataError(meta_file, "each line must be a JSON object", line_no)
    for legacy, modern in LEGACY_KEYS.items():
        if legacy in row and modern not in row:
            row[modern] = row.pop(legacy)
    missing = [key for key in REQUIRED_KEYS if key not in row]
    if missing:
        raise MetadataError(meta_file, f"missing key(s) {', '.join(missing)}", line_no)
    for key in REQUIRED_KEYS:
        if not isinstance(row[key], str) or (key != "text_bg" and not row[key].strip()):
            raise MetadataError(meta_file, f"key {key!r} must be a non-empty string", line_no)
    known = MetadataRecord.__dataclass_fields__
    values = {key: row[key] for key in known if key in row}
    values["case_id"] = str(values.get("case_id") or Path(row["file_name"]).stem)
    values["attributes"] = dict(values.get("attributes") or {})
    values["bg_stats"] = [float(v) for v in values.get("bg_stats") or []]
    values["synthetic"] = bool(values.get("synthetic", False))
    return MetadataRecord(**values)


def read_metadata(location: str | os.PathLike) -> list[MetadataRecord]:
    """Parse metadata.jsonl; raises MetadataError naming file and line on the first bad line."""
    meta_file = metadata_path(location)
    records = []
    with open(meta_file, encoding="utf-8") as handle:
        for line_no, text in enumerate(handle, start=1):
            if text.strip():
                records.append(parse_line(text, meta_file, line_no))
    if not records:
        raise MetadataError(meta_file, "no records")
    return records


def write_metadata(root: str | os.PathLike, records: list[MetadataRecord]) -> Path:
    """Write ROOT/init_image/metadata.jsonl atomically."""
    target = Path(root) / IMAGE_DIR / METADATA_FILE
    write_jsonl(target, (record.to_json() for record in records))
    return target


def resolve(meta_file: Path, relative: str) -> Path:
    """Absolute path of a record's file, relative to the metadata file's folder."""
    return (meta_file.parent / relative).resolve()
