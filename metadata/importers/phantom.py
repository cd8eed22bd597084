"""The built-in default dataset: phantom cases rendered into a Tiger dataset folder."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from metadata.atomic import write_json
from metadata.builder import Sample, build_dataset
from metadata.phantom import PhantomConfig, generate_case, render_frame
from metadata.records import dataset_root

PHANTOM_CONFIG_FILE = "phantom_config.json"


def phantom_samples(n_images: int, config: PhantomConfig) -> Iterator[Sample]:
    produced = 0
    case_index = 0
    while produced < n_images:
        case = generate_case(case_index, config)
        case_index += 1
        for frame_index in range(len(case.frame_seeds)):
            if produced >= n_images:
                return
            frame = render_frame(case, config.size, frame_index)
            geometry = case.geometry
            yield Sample(
                stem=f"{case.case_id}_{frame_index + 1}",
                image=frame.image,
                mask=frame.mask,
                attributes=case.attributes,
                case_id=case.case_id,
                source="phantom",
                extra={
                    "aspect_ratio": round(geometry.semi_axes[0] / geometry.semi_axes[1], 4),
                    "frame": frame_index + 1,
                    "vessel": case.vessel is not None,
                    **{key: round(value, 4) for key, value in frame.machine.items()},
                },
            )
            produced += 1


def build_phantom_dataset(
    out_root: str | os.PathLike,
    n_images: int = 1000,
    size: int = 128,
    seed: int = 0,
    config: PhantomConfig | None = None,
) -> Path:
    """Render `n_images` phantom frames (cases of 1-2 frames) into a dataset folder."""
    if n_images < 1:
        raise ValueError(f"n_images must be positive, got {n_images}")
    config = config or PhantomConfig(size=size, seed=seed)
    meta_file = build_dataset(phantom_samples(n_images, config), out_root, total=n_images)
    write_json(
        dataset_root(meta_file) / PHANTOM_CONFIG_FILE,
        {"n_images": n_images, **config.__dict__},
    )
    return meta_file
