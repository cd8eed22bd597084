"""Checkpoints: accelerate state (models, optimizer, lr scheduler, EMA, RNG) plus trainer state.

Each checkpoint is written to a hidden temp folder and renamed into place, so a run killed while
saving leaves the previous checkpoint intact; `checkpoints_total_limit` keeps the newest N.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from accelerate import Accelerator

from metadata.atomic import write_json

PREFIX = "checkpoint-"
STATE_FILE = "trainer_state.json"
PATTERN = re.compile(rf"^{PREFIX}(\d+)$")


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints, oldest first."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = PATTERN.match(path.name)
        if match and (path / STATE_FILE).is_file():
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def resolve_resume(output_dir: str | os.PathLike, value: str | None) -> Path | None:
    """'latest' -> newest checkpoint (None when there is none yet); a path must exist."""
    if not value:
        return None
    if value == "latest":
        existing = list_checkpoints(output_dir)
        return existing[-1] if existing else None
    path = Path(value)
    if not path.is_absolute() and not path.exists():
        path = Path(output_dir) / value
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(f"{path}: not a complete checkpoint (no {STATE_FILE})")
    return path


def save_checkpoint(
    accelerator: Accelerator,
    output_dir: str | os.PathLike,
    step: int,
    trainer_state: dict,
    total_limit: int | None = None,
) -> Path:
    final = Path(output_dir) / f"{PREFIX}{step}"
    staging = Path(output_dir) / f".{PREFIX}{step}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging))
    if accelerator.is_main_process:
        write_json(staging / STATE_FILE, dict(trainer_state, global_step=step))
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
        prune_checkpoints(output_dir, total_limit)
    accelerator.wait_for_everyone()
    return final


def prune_checkpoints(output_dir: str | os.PathLike, total_limit: int | None) -> None:
    if not total_limit or total_limit <= 0:
        return
    existing = list_checkpoints(output_dir)
    for old in existing[: max(0, len(existing) - total_limit)]:
        shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(accelerator: Accelerator, path: Path) -> dict:
    """Restore accelerate state and return the trainer state saved with it."""
    accelerator.load_state(str(path))
    return json.loads((path / STATE_FILE).read_text("utf-8"))
