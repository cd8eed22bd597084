"""Merge the diversify and reference manifests of one subtype into GEN/manifest.jsonl.

Filtering and the classifier take one synthetic pool per subtype; rows keep every key, and
relative paths become absolute so the merged manifest works from its own folder.
`python -m scripts.pipeline.manifests --out GEN GEN/diversify GEN/reference`
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from metadata.atomic import write_jsonl
from metadata.records import MetadataError

PATH_KEYS = ("file_name", "condition_FG", "condition_BG")


def read_rows(folder: Path) -> list[dict]:
    manifest = folder / "manifest.jsonl"
    if not manifest.is_file():
        raise MetadataError(manifest, "generated manifest not found")
    rows = []
    for line_no, text in enumerate(manifest.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as error:
            raise MetadataError(manifest, f"malformed JSON ({error.msg})", line_no) from None
        for key in PATH_KEYS:
            if isinstance(row.get(key), str) and not Path(row[key]).is_absolute():
                row[key] = str((folder / row[key]).resolve())
        rows.append(row)
    return rows


def merge_manifests(out: Path, parts: list[Path]) -> Path:
    """Write OUT/manifest.jsonl from the parts; ids must stay unique across them."""
    rows, seen = [], {}
    for part in parts:
        for row in read_rows(part):
            if row.get("id") in seen:
                raise MetadataError(
                    part / "manifest.jsonl", f"id {row['id']!r} also in {seen[row['id']]}"
                )
            seen[row.get("id")] = part
            rows.append(row)
    if not rows:
        raise MetadataError(out, "no generated images to merge")
    target = out / "manifest.jsonl"
    write_jsonl(target, rows)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("parts", type=Path, nargs="+")
    args = parser.parse_args(argv)
    try:
        print(merge_manifests(args.out, args.parts))
    except MetadataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
