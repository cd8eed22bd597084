"""The synthetic manifest (GEN/manifest.jsonl) and the filtered manifest (FILTERED/manifest.jsonl).

Rows follow ARCHITECTURE.md. Filtering needs `id`, `file_name`, `label` and the text the image was
generated from (`text_nd`); the other generation keys are carried through untouched.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from metadata.atomic import write_jsonl
from metadata.records import MetadataError

MANIFEST_FILE = "manifest.jsonl"
REQUIRED_KEYS = ("id", "file_name", "label", "text_nd")
SCORE_KEYS = ("clip_score", "moso_score", "kept", "drop_reason")


@dataclass
class SyntheticImage:
    """One manifest row plus the absolute path of its image."""

    row: dict
    path: Path

    @property
    def id(self) -> str:
        return str(self.row["id"])

    @property
    def label(self) -> str:
        return str(self.row["label"])

    def text(self, key: str = "text_nd") -> str:
        return str(self.row.get(key) or self.row["text_nd"])


def manifest_path(location: str | os.PathLike) -> Path:
    """Accept GEN (the folder) or GEN/manifest.jsonl."""
    path = Path(location)
    if path.is_dir():
        path = path / MANIFEST_FILE
    if not path.is_file():
        raise MetadataError(path, "synthetic manifest not found")
    return path


def read_manifest(location: str | os.PathLike) -> list[SyntheticImage]:
    """Parse and validate every row; the first bad row raises MetadataError with file and line."""
    path = manifest_path(location)
    images: list[SyntheticImage] = []
    seen: dict[str, int] = {}
    with open(path, encoding="utf-8") as handle:
        for line_no, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as error:
                raise MetadataError(path, f"malformed JSON ({error.msg})", line_no) from None
            if not isinstance(row, dict):
                raise MetadataError(path, "each line must be a JSON object", line_no)
            missing = [key for key in REQUIRED_KEYS if key not in row]
            if missing:
                raise MetadataError(path, f"missing key(s) {', '.join(missing)}", line_no)
            for key in REQUIRED_KEYS:
                if not isinstance(row[key], str) or not row[key].strip():
                    raise MetadataError(path, f"key {key!r} must be a non-empty string", line_no)
            if row["id"] in seen:
                raise MetadataError(
                    path, f"duplicate id {row['id']!r} (first on line {seen[row['id']]})", line_no
                )
            seen[row["id"]] = line_no
            images.append(SyntheticImage(row=row, path=(path.parent / row["file_name"]).resolve()))
    if not images:
        raise MetadataError(path, "no rows")
    return images


def read_scores(location: str | os.PathLike, key: str) -> dict[str, float]:
    """Read a scores jsonl ({"id": ..., key: float} per line) into a dict keyed by id."""
    path = Path(location)
    if not path.is_file():
        raise MetadataError(path, "scores file not found")
    scores: dict[str, float] = {}
    with open(path, encoding="utf-8") as handle:
        for line_no, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
                scores[str(row["id"])] = float(row[key])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
                raise MetadataError(path, f"bad score row ({error!r})", line_no) from None
    return scores


def write_filtered_manifest(out_dir: str | os.PathLike, rows: list[dict]) -> Path:
    """Write FILTERED/manifest.jsonl atomically with absolute image paths (always resolvable)."""
    target = Path(out_dir) / MANIFEST_FILE
    write_jsonl(target, rows)
    return target
