"""Data order and per-step randomness as pure functions of (seed, step).

Nothing random carries state across steps, so a run resumed from a checkpoint at step k draws
exactly what the uninterrupted run drew at step k: same images, flips, caption dropout,
timesteps and noise. accelerate's own RNG snapshot is saved too, as a second line of defence.
"""

from __future__ import annotations

import torch

# Distinct streams so that, e.g., changing the noise offset never changes the data order.
STREAM_DATA = 1
STREAM_STEP = 2


def seeded_generator(seed: int, *keys: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A generator whose seed mixes `seed` and `keys` (64-bit, collision-free for small keys)."""
    mixed = seed & 0xFFFFFFFF
    for key in keys:
        mixed = (mixed * 1_000_003 + int(key) + 1) & 0x7FFF_FFFF_FFFF_FFFF
    generator = torch.Generator(device=device)
    generator.manual_seed(mixed)
    return generator


def batches_per_epoch(num_items: int, global_batch: int) -> int:
    if num_items < global_batch:
        raise ValueError(
            f"dataset has {num_items} items, fewer than one global batch of {global_batch}; "
            "lower the batch size"
        )
    return num_items // global_batch


def batch_indices(
    num_items: int,
    global_batch: int,
    micro_step: int,
    seed: int,
    process_index: int = 0,
    num_processes: int = 1,
) -> torch.Tensor:
    """Indices of this process's share of global micro-batch `micro_step` (epochs drop_last)."""
    per_epoch = batches_per_epoch(num_items, global_batch)
    epoch, position = divmod(micro_step, per_epoch)
    order = torch.randperm(num_items, generator=seeded_generator(seed, STREAM_DATA, epoch))
    chunk = order[position * global_batch : (position + 1) * global_batch]
    per_process = global_batch // num_processes
    return chunk[process_index * per_process : (process_index + 1) * per_process]


def step_generator(
    seed: int, micro_step: int, process_index: int = 0, device: str | torch.device = "cpu"
) -> torch.Generator:
    """Generator for everything drawn in one micro-step (flips, dropout, timesteps, noise)."""
    return seeded_generator(seed, STREAM_STEP, micro_step, process_index, device=device)


def random_crops(
    crop_range, indices: list[int], generator: torch.Generator
) -> list[tuple[int, int]]:
    """One random (top, left) per item; `crop_range(index)` gives its spare rows and columns."""
    crops = []
    for index in indices:
        spare_rows, spare_cols = crop_range(index)
        top = int(torch.randint(0, spare_rows + 1, (1,), generator=generator))
        left = int(torch.randint(0, spare_cols + 1, (1,), generator=generator))
        crops.append((top, left))
    return crops
