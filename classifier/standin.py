"""Stand-in synthetic manifests built from another real-like layout (e.g. a phantom generated
with a different seed), so the five-arm experiment can run before generated images exist.

Every row says `stand_in: true`; reports must label results from them as stand-ins. The `kept`
flag of the "filtered" stand-in is a seeded coin flip, not a CLIP/MoSo decision.
"""

from __future__ import annotations

import random
from pathlib import Path

from classifier.layout import read_split
from metadata.atomic import write_jsonl
from metadata.vocabulary import BENIGN


def write_stand_in_manifests(
    source_croot: str | Path,
    subtype: str,
    out_dir: str | Path,
    kept_fraction: float = 0.6,
    seed: int = 0,
) -> tuple[Path, Path]:
    """(unfiltered, filtered) manifests over the source layout's train images (absolute paths)."""
    out_dir = Path(out_dir)
    rng = random.Random(seed)
    rows = []
    for item in read_split(source_croot, subtype, "train"):
        rows.append(
            {
                "id": item.path.stem,
                "file_name": str(item.path.resolve()),
                "label": subtype if item.label else BENIGN,
                "mode": "stand_in",
                "stand_in": True,
            }
        )
    unfiltered = out_dir / "unfiltered" / "manifest.jsonl"
    filtered = out_dir / "filtered" / "manifest.jsonl"
    write_jsonl(unfiltered, rows)
    write_jsonl(
        filtered,
        [
            {**row, "kept": keep, "drop_reason": "" if keep else "stand-in coin flip"}
            for row, keep in ((row, rng.random() < kept_fraction) for row in rows)
        ],
    )
    return unfiltered, filtered
