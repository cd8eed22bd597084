"""The report's pictures: real vs synthetic sample grids and score histograms."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from metadata.records import metadata_path, read_metadata, resolve
from scripts.pipeline.stages import Layout

TILE = 96
PER_ROW = 8
LABEL_WIDTH = 90


def tile(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("L").resize((TILE, TILE), Image.BILINEAR)


def generated_paths(folder: Path, limit: int) -> list[Path]:
    manifest = folder / "manifest.jsonl"
    if not manifest.is_file():
        return []
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    return [(folder / row["file_name"]).resolve() for row in rows[:limit]]


def real_train_paths(layout: Layout, subtype: str, limit: int) -> list[Path]:
    meta_file = metadata_path(layout.train_only)
    records = [r for r in read_metadata(meta_file) if r.label == subtype][:limit]
    return [resolve(meta_file, r.file_name) for r in records]


def sample_grid(layout: Layout, subtype: str, out: Path, label: str = "") -> Path | None:
    """Rows: real train images of the generated class, then each mode's first images."""
    rows = [("real", real_train_paths(layout, label or subtype, PER_ROW))]
    for mode in ("diversify", "reference"):
        rows.append((mode, generated_paths(layout.generated(subtype) / mode, PER_ROW)))
    rows = [(name, paths) for name, paths in rows if paths]
    if len(rows) < 2:
        return None
    canvas = Image.new("L", (LABEL_WIDTH + TILE * PER_ROW, TILE * len(rows)), 255)
    draw = ImageDraw.Draw(canvas)
    for row, (name, paths) in enumerate(rows):
        draw.text((6, row * TILE + TILE // 2 - 6), name, fill=0)
        for column, path in enumerate(paths):
            canvas.paste(tile(path), (LABEL_WIDTH + column * TILE, row * TILE))
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    return out


def score_histograms(
    filtered_rows: list[dict], moso_rows: list[dict], out: Path, subtype: str
) -> Path | None:
    """CLIP score of kept vs dropped synthetic images; MoSo of real vs synthetic pool members."""
    if not filtered_rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    for kept, colour in ((True, "tab:green"), (False, "tab:red")):
        values = [
            r["clip_score"]
            for r in filtered_rows
            if r["kept"] == kept and r["clip_score"] is not None
        ]
        if values:
            left.hist(values, bins=15, alpha=0.6, color=colour, label="kept" if kept else "dropped")
    left.set_title(f"{subtype}: CLIP score of synthetic images")
    left.set_xlabel("CLIP score (100 x cosine)")
    left.legend()
    for source, colour in (("real", "tab:blue"), ("synthetic", "tab:orange")):
        values = np.array([r["moso_score"] for r in moso_rows if r.get("source") == source])
        if values.size:
            right.hist(values, bins=15, alpha=0.6, color=colour, label=source)
    right.set_title("MoSo score (low = least useful)")
    right.legend()
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=90)
    plt.close(figure)
    return out
