"""One patient under two case ids: near-identical frames filed under different cases.

DDTI holds about a hundred such case pairs (e.g. ddti_296 and ddti_564 hold the same five
frames). A case-level split that trusts the ids puts a test patient's frames into train, so the
builder merges those cases before anything is split. Frames are compared as 32 px grey
thumbnails by Pearson correlation: on DDTI the copies correlate above 0.99 and no other pair of
cases lies between 0.95 and 0.99; independent phantom cases stay below 0.85.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

THUMBNAIL = 32
THRESHOLD = 0.98


def thumbnail_vector(grey: np.ndarray) -> np.ndarray:
    """Zero-mean, unit-norm 32x32 thumbnail, so a dot product is a Pearson correlation."""
    small = Image.fromarray(np.asarray(grey, dtype=np.uint8)).resize(
        (THUMBNAIL, THUMBNAIL), Image.BILINEAR
    )
    vector = np.asarray(small, dtype=np.float64).ravel()
    vector -= vector.mean()
    norm = np.linalg.norm(vector)
    return vector / norm if norm > 0 else vector


@dataclass
class DuplicateCases:
    """Groups of case ids that share a near-identical frame (size >= 2 each)."""

    groups: list[list[str]]

    def representative(self) -> dict[str, str]:
        """case id -> the group's first id (sorted), for every case in a group."""
        return {case: group[0] for group in self.groups for case in group}


def find_duplicate_cases(
    case_ids: list[str], vectors: np.ndarray, threshold: float = THRESHOLD, chunk: int = 1024
) -> DuplicateCases:
    """Union of cases whose frames correlate at or above `threshold` (chunked, O(n^2) dots)."""
    parent = {case: case for case in case_ids}

    def root(case: str) -> str:
        while parent[case] != case:
            parent[case] = parent[parent[case]]
            case = parent[case]
        return case

    cases = np.asarray(case_ids)
    for start in range(0, len(case_ids), chunk):
        block = vectors[start : start + chunk] @ vectors.T
        rows, cols = np.nonzero(block >= threshold)
        for row, col in zip(rows + start, cols):
            if cases[row] != cases[col]:
                a, b = root(str(cases[row])), root(str(cases[col]))
                if a != b:
                    parent[max(a, b)] = min(a, b)
    members: dict[str, list[str]] = {}
    for case in sorted(set(case_ids)):
        members.setdefault(root(case), []).append(case)
    return DuplicateCases(sorted(group for group in members.values() if len(group) > 1))


def save_duplicate_grid(
    records: list, groups: list[list[str]], root: Path, out: Path, rows: int = 12, tile: int = 64
) -> Path:
    """A picture of the first `rows` groups: one row per group, one frame per case, with the
    case and label written under each, so a reader can check the merge (and any conflict)."""
    from metadata.atomic import save_png

    first_frame: dict[str, object] = {}
    for record in records:
        first_frame.setdefault(record.attributes.get("listed_case_id", record.case_id), record)
    widest = max((len(group) for group in groups[:rows]), default=1)
    canvas = Image.new("L", (widest * tile, min(rows, len(groups)) * (tile + 12)), 0)
    draw = ImageDraw.Draw(canvas)
    for row, group in enumerate(groups[:rows]):
        for column, case in enumerate(group):
            record = first_frame.get(case)
            if record is None:
                continue
            with Image.open(root / "init_image" / record.file_name) as picture:
                canvas.paste(
                    picture.convert("L").resize((tile, tile)), (column * tile, row * (tile + 12))
                )
            draw.text(
                (column * tile + 2, row * (tile + 12) + tile),
                f"{case}:{record.label}"[:12],
                fill=255,
            )
    save_png(out, canvas)
    return out
