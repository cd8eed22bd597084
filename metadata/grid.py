"""Picture grids of dataset samples per class, so a reader can judge realism at a glance."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from metadata.atomic import save_png
from metadata.labelset import read_labelset
from metadata.records import dataset_root, metadata_path, read_metadata, resolve

LABEL_WIDTH = 80


def save_class_grid(
    location: str | os.PathLike, out: str | os.PathLike, per_class: int = 6, tile: int = 128
) -> Path:
    meta_file = metadata_path(location)
    records = read_metadata(meta_file)
    order = read_labelset(dataset_root(meta_file)).labels  # the label set's own order
    labels = sorted(
        {r.label for r in records}, key=lambda x: (order.index(x) if x in order else 99, x)
    )
    rows = []
    for label in labels:
        chosen = [r for r in records if r.label == label][:per_class]
        canvas = Image.new("L", (LABEL_WIDTH + per_class * tile, tile), 0)
        ImageDraw.Draw(canvas).text((4, tile // 2 - 6), label, fill=255)
        for column, record in enumerate(chosen):
            with Image.open(resolve(meta_file, record.file_name)) as picture:
                canvas.paste(
                    picture.convert("L").resize((tile, tile)), (LABEL_WIDTH + column * tile, 0)
                )
        rows.append(np.asarray(canvas))
    save_png(out, np.concatenate(rows, axis=0))
    return Path(out)
