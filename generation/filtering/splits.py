"""Case-level splits of the real records: images of one patient never straddle two splits."""

from __future__ import annotations

import hashlib

from metadata.records import MetadataRecord


def case_fraction(case_id: str, seed: int) -> float:
    """A stable pseudo-random number in [0, 1) per case, independent of record order."""
    digest = hashlib.sha256(f"{seed}:{case_id}".encode()).hexdigest()
    return int(digest[:12], 16) / float(16**12)


def split_by_case(
    records: list[MetadataRecord], holdout_fraction: float, seed: int = 0
) -> tuple[list[MetadataRecord], list[MetadataRecord]]:
    """Split into (train, held_out) by case id; held-out cases are used only for reporting."""
    if not 0.0 <= holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in [0, 1), got {holdout_fraction}")
    train = [r for r in records if case_fraction(r.case_id, seed) >= holdout_fraction]
    held = [r for r in records if case_fraction(r.case_id, seed) < holdout_fraction]
    return train, held
