"""Checkpoints: trained weights, optimizer, lr scheduler and EMA (`generation.training.state`:
safetensors + JSON, nothing pickled) plus the trainer state.

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

from generation.training.state import TrainingState, load_training_state, save_training_state
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
    training_state: TrainingState,
    total_limit: int | None = None,
) -> Path:
    """The main process writes a staging folder and renames it into place; every rank waits
    until the rename is done, so no rank reads or writes a half-made checkpoint."""
    final = Path(output_dir) / f"{PREFIX}{step}"
    staging = Path(output_dir) / f".{PREFIX}{step}.tmp"
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        save_training_state(staging, training_state)
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


def load_checkpoint(path: Path, training_state: TrainingState) -> dict:
    """Restore the training state in place (no pickle is read, whatever else lies in `path`)
    and return the trainer state saved with it."""
    load_training_state(path, training_state)
    return json.loads((path / STATE_FILE).read_text("utf-8"))
