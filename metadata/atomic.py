"""Write-then-rename helpers: a crash never leaves a half-written file behind."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a temp file beside `path`; rename onto `path` only if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        with open(tmp_name, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as handle:
        handle.write(text)


def write_json(path: str | os.PathLike, data: object) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    with atomic_open(path, "w") as handle:
        for row in rows:
            handle.write(json.dumps(row, sort_keys=False) + "\n")


def save_png(path: str | os.PathLike, image: np.ndarray | Image.Image, pnginfo=None) -> None:
    """Save a PNG atomically; `pnginfo` carries text chunks (e.g. synthetic provenance)."""
    picture = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    with atomic_open(path, "wb") as handle:
        picture.save(handle, format="PNG", pnginfo=pnginfo)


@contextmanager
def staging_dir(final_dir: str | os.PathLike) -> Iterator[Path]:
    """Build a whole folder next to its destination and swap it in only when complete."""
    final = Path(final_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".staging", dir=final.parent))
    try:
        yield staging
        if final.exists():
            backup = final.with_name(f".{final.name}.old")
            shutil.rmtree(backup, ignore_errors=True)
            os.replace(final, backup)
            os.replace(staging, final)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
