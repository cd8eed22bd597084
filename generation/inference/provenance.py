"""Provenance: the model folder's content hash, and the `tiger:provenance` PNG text chunk.

Every synthetic PNG carries its full manifest row (with `synthetic: true`) in an iTXt chunk, so
an image copied out of its folder can still be told from a real one and traced to the model,
prompt, conditions and seed that made it; the manifest is rebuilt from these chunks.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from PIL import Image, PngImagePlugin

from metadata.atomic import save_png, write_json

PROVENANCE_KEY = "tiger:provenance"
HASH_CACHE = ".model_hash.json"


def folder_files(folder: Path) -> list[Path]:
    """Regular files under `folder` (following the fine folder's coarse/ copy), hidden skipped."""
    files = []
    for root, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files.extend(Path(root) / n for n in sorted(names) if not n.startswith("."))
    return files


def model_hash(folders: list[Path], cache_dir: Path | None = None) -> str:
    """sha256 over every file's relative path and bytes; cached by (path, size, mtime)."""
    listing = []
    for folder in folders:
        for file in folder_files(folder):
            stat = file.stat()
            listing.append([str(file.resolve()), stat.st_size, stat.st_mtime_ns])
    cache = cache_dir / HASH_CACHE if cache_dir is not None else None
    if cache is not None and cache.is_file():
        try:
            data = json.loads(cache.read_text("utf-8"))
            if data.get("listing") == listing:
                return str(data["sha256"])
        except (OSError, ValueError, KeyError):
            pass
    digest = hashlib.sha256()
    for folder in folders:
        for file in folder_files(folder):
            digest.update(str(file.relative_to(folder)).encode() + b"\0")
            with open(file, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
    value = "sha256:" + digest.hexdigest()
    if cache is not None:
        write_json(cache, {"listing": listing, "sha256": value})
    return value


def save_with_provenance(path: Path, image: Image.Image, row: dict) -> None:
    """Atomic PNG write with the manifest row (plus synthetic=true) in a text chunk."""
    info = PngImagePlugin.PngInfo()
    info.add_itxt(PROVENANCE_KEY, json.dumps({**row, "synthetic": True}, sort_keys=True))
    save_png(path, image, pnginfo=info)


def read_provenance(path: str | os.PathLike) -> dict | None:
    """The provenance row of a PNG, or None when it has none (a real image) or is unreadable."""
    try:
        with Image.open(path) as image:
            text = getattr(image, "text", {}).get(PROVENANCE_KEY)
    except (OSError, ValueError):
        return None
    if text is None:
        return None
    try:
        row = json.loads(text)
    except json.JSONDecodeError:
        return None
    return row if isinstance(row, dict) else None


def is_synthetic(path: str | os.PathLike) -> bool:
    row = read_provenance(path)
    return bool(row and row.get("synthetic"))
