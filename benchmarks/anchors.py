"""Shared parts of the anchor benchmarks (ours against the tools users would run instead).

`benchmarks/results/anchor_speed.json` holds one ratio per anchor; each benchmark script
writes its own entry (and its full result beside it), leaving the others as they are.
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

from metadata.atomic import write_json

ANCHOR_FILE = Path("benchmarks/results/anchor_speed.json")


def record_anchor(key: str, value, anchor_file: Path = ANCHOR_FILE) -> dict:
    """Merge one anchor's entry into the anchor file (written atomically)."""
    current = json.loads(anchor_file.read_text()) if anchor_file.is_file() else {}
    current[key] = value
    write_json(anchor_file, current)
    return current


def offline_env(cache: Path) -> dict[str, str]:
    """The environment for a baseline script: no hub, every cache inside the run folder."""
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        DIFFUSERS_OFFLINE="1",
        HF_HOME=str(cache / "hf"),
        HF_DATASETS_CACHE=str(cache / "datasets"),
        TORCH_HOME=str(cache / "torch"),
        WANDB_MODE="disabled",
    )
    return env


def scalar_events(log_dir: Path, tag: str) -> list[tuple[int, float, float]]:
    """(step, wall time, value) of a TensorBoard scalar, from every event file under log_dir.

    Both trainers log their loss each step through accelerate's TensorBoard tracker, so the
    events' wall times time both the same way."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rows: dict[int, tuple[float, float]] = {}
    for events in sorted(Path(log_dir).rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events.parent), size_guidance={"scalars": 0})
        accumulator.Reload()
        if tag in accumulator.Tags().get("scalars", []):
            for event in accumulator.Scalars(tag):
                rows[event.step] = (event.wall_time, event.value)
    return [(step, *rows[step]) for step in sorted(rows)]


def images_per_second(events: list[tuple[int, float, float]], warmup: int, batch: int) -> float:
    """Throughput between the end of step `warmup` and the last step."""
    times = {step: wall for step, wall, _ in events}
    last = max(times)
    if warmup not in times or last <= warmup:
        raise ValueError(f"need steps {warmup} and later, got {sorted(times)[:3]}...")
    return (last - warmup) * batch / (times[last] - times[warmup])


def median_of(runs: list[dict], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def ratio_entry(ours: list[dict], baseline: list[dict], key: str) -> float:
    return median_of(ours, key) / median_of(baseline, key)


def environment_note() -> dict:
    import diffusers
    import torch

    return {
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "threads": torch.get_num_threads(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }


def write_result(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, result)
