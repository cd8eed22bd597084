"""Content-hash bookkeeping so a re-run redoes only the stages whose inputs or config changed.

A finished stage leaves `.tiger_stage.json` in its output folder with the key it was run with
(a hash of its config and of its inputs' content hashes) and the content hash of what it wrote.
The content hash is recomputed only when the folder's listing (names, sizes, mtimes) changed.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from metadata.atomic import write_json

MARKER = ".tiger_stage.json"
CHUNK = 1 << 20


def listing_fingerprint(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MARKER):
        stat = path.stat()
        digest.update(f"{path.relative_to(folder)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def content_hash(folder: Path) -> str:
    """sha256 over every file's relative path and bytes (the marker itself excluded)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MARKER):
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        with open(path, "rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def stage_key(name: str, config: dict, input_hashes: list[str]) -> str:
    payload = json.dumps({"stage": name, "config": config, "inputs": input_hashes}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass
class StageRecord:
    key: str
    output_hash: str
    fingerprint: str
    seconds: float
    peak_rss_mb: float
    peak_gpu_mb: float | None


def read_marker(folder: Path) -> StageRecord | None:
    marker = folder / MARKER
    if not marker.is_file():
        return None
    try:
        return StageRecord(**json.loads(marker.read_text()))
    except (json.JSONDecodeError, TypeError):
        return None


def is_complete(folder: Path, key: str) -> bool:
    record = read_marker(folder)
    if record is None or record.key != key:
        return False
    return current_hash(folder, record) == record.output_hash


def current_hash(folder: Path, record: StageRecord) -> str:
    if listing_fingerprint(folder) == record.fingerprint:
        return record.output_hash
    return content_hash(folder)


def mark_complete(
    folder: Path, key: str, seconds: float, peak_rss_mb: float, peak_gpu_mb: float | None
) -> StageRecord:
    record = StageRecord(
        key=key,
        output_hash=content_hash(folder),
        fingerprint=listing_fingerprint(folder),
        seconds=round(seconds, 2),
        peak_rss_mb=round(peak_rss_mb, 1),
        peak_gpu_mb=None if peak_gpu_mb is None else round(peak_gpu_mb, 1),
    )
    write_json(folder / MARKER, record.__dict__)
    return record


def output_hash(folder: str | os.PathLike) -> str:
    record = read_marker(Path(folder))
    if record is None:
        raise ValueError(f"{folder}: stage output is not complete (no {MARKER})")
    return record.output_hash
